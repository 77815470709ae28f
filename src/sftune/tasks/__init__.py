"""Tasks: each a :class:`~sftune.tasks.base.Task` registered in :data:`TASKS` (see base.py).

Importing this package registers the built-in tasks; ``--task`` choices and ``task=auto``
detection come from the registry, never from a list elsewhere.
"""

from .base import TASKS, Task, TaskModule, TaskOptions, create_task, detect_task
from .classification import Classifier
from . import detection, segmentation  # noqa: F401  (register object_detection, semantic_segmentation)

__all__ = ["TASKS", "Classifier", "Task", "TaskModule", "TaskOptions", "create_task", "detect_task"]
