"""Keeping a model good over time: reference statistics stored at train time, drift tests
(pure functions), a model registry (local SQLite folder or MLflow) and the update loop
detect -> fit -> evaluate -> gate -> promote."""
