"""sftune: supervised fine-tuning of pretrained models.

    import sftune
    run = sftune.finetune(data="photos/", model="efficientnet_lite0", strategy="linear_probe", out="runs/ants")
    model = sftune.load(run.path)
    model.predict(["img1.jpg"], top_k=3)

    result = sftune.drift(run.path, "new_photos/")                  # result.drift, result.tests
    update = sftune.update(run.path, "new_photos/", registry="models/")  # update.decision.promote
    registry = sftune.Registry("models/")                           # versions(), get("ants", "champion")
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import RunResult


def finetune(
    data: str | Path | None = None,
    model: str | None = None,
    strategy: str | None = None,
    out: str | Path | None = None,
    config: str | Path | None = None,
    val_data: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    trust_pickle: bool = False,
    **overrides: Any,
) -> "RunResult":
    """Fine-tune ``model`` on ``data`` and write a bundle to ``out``.

    ``data``: images or texts (the task is detected); ``val_data``: separate validation data.
    ``overrides`` are dotted config keys with ``__`` for dots, e.g.
    ``train__epochs=5, strategy__unfreeze_epoch=2``; ``config`` is a YAML file.
    ``trust_pickle``: a ``file:`` backbone may be fully unpickled (runs code; only for trusted files).
    """
    from .config import build_config
    from .engine import run_training

    flat = {"data.path": str(data) if data is not None else None, "model.name": model, "strategy.name": strategy,
            "data.val_path": str(val_data) if val_data is not None else None}
    flat.update({k.replace("__", "."): v for k, v in overrides.items()})
    cfg = build_config(file=config, overrides=flat)
    from .trust import trusting_pickles

    with trusting_pickles(trust_pickle):
        return run_training(cfg, out or default_out_dir(), resume=resume, overwrite=overwrite)


def load(path: str | Path, device: str | None = None, precision: str = "auto") -> Any:
    """Load a bundle (the ``--out`` folder of a finished run) for predict/evaluate, as its task's
    predictor: an image or text classifier, a segmentation model, ...

    ``precision``: ``auto`` (bfloat16 where the CPU/GPU has native bf16), ``32`` or ``bf16``.
    """
    from .predictor import load as _load

    return _load(path, device, precision)


def evaluate(path: str | Path, data: str | Path, report: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a bundle on labeled data; with ``report`` (a folder), also report.html and
    report.json there (as ``sftune eval``), and the metrics gain their 95% ``intervals``."""
    from .predictor import bundle_task

    task, folder = bundle_task(path)
    model = task.load_predictor(folder, None, "auto")
    if report is None:
        return model.evaluate(data)
    outputs = model.outputs(data)
    result = task.evaluation_report(outputs, path, str(data), f"{Path(path).name} on {Path(str(data)).name or data}",
                                    1000, 24)
    task.write_evaluation(Path(report), result, model)
    return {**outputs.headline(), **result["metrics"], "intervals": result["intervals"]}


def list_models(pattern: str = "*") -> list[str]:
    """Names in the offline zoo (``timm:<name>`` and ``file:<path>`` work too)."""
    from .backbones import ZOO

    return ZOO.list(pattern)


from .continual.api import Registry, drift, update  # noqa: E402 (light: their imports are inside)


def default_out_dir() -> Path:
    import time

    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


__all__ = ["Registry", "__version__", "default_out_dir", "drift", "evaluate", "finetune", "list_models", "load",
           "update"]
