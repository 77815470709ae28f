"""Typed run configuration: defaults < YAML file < CLI flags < ``--set`` overrides.

Each component reads only its own section (``data``, ``model``, ``strategy``,
``train``, ``trainer``). The resolved tree is saved as ``config.yaml`` in every
bundle, so a run can be reproduced from its folder alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_serializer, model_validator

from .errors import SftuneError, did_you_mean


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioConfig(_Section):
    """The audio front end (task audio_classification): waveform -> log-mel spectrogram -> image CNN.

    Saved resolved in every bundle's config.yaml, so predict and eval read audio as training did."""

    sample_rate: int | None = Field(None, ge=1000, le=192_000, description="audio: rate (Hz) every file is resampled to; default: the training data's most common rate (saved in the bundle)")
    clip_seconds: float = Field(1.0, gt=0, le=60, description="audio: window length (s); shorter clips are padded, longer ones split into windows whose predictions are averaged")
    window_hop_seconds: float | None = Field(None, gt=0, le=60, description="audio: step between the windows of a long recording (s); default: half a window")
    win_ms: float = Field(25.0, gt=0, le=1000, description="audio: STFT window (ms)")
    hop_ms: float = Field(10.0, gt=0, le=1000, description="audio: STFT hop (ms)")
    n_mels: int = Field(128, ge=8, le=512, description="audio: mel bands (the spectrogram's height; 128 gives the CNN twice the rows of the common 64)")
    fmin: float = Field(0.0, ge=0, description="audio: lowest mel frequency (Hz)")
    fmax: float | None = Field(None, gt=0, description="audio: highest mel frequency (Hz); default: half the sample rate")
    top_db: float = Field(80.0, gt=0, le=200, description="audio: dynamic range kept below each clip's peak (dB)")
    freq_masks: int = Field(2, ge=0, le=10, description="audio, training: SpecAugment frequency masks per clip (0 = off)")
    freq_mask_bands: int = Field(8, ge=0, description="audio, training: widest frequency mask (mel bands)")
    time_masks: int = Field(2, ge=0, le=10, description="audio, training: SpecAugment time masks per clip (0 = off)")
    time_mask_frames: int = Field(10, ge=0, description="audio, training: widest time mask (STFT frames)")
    image_height: int | None = Field(None, ge=16, le=1024, description="audio: resize the spectrogram to this many rows (and as many columns per frame) before the CNN; default: n_mels, no resize")


class DataConfig(_Section):
    path: str | None = Field(None, description="image or audio folder (train/ [val/] or <class>/*) or CSV manifest with path,label; text tables (see README)")
    val_path: str | None = Field(None, description="separate validation folder/CSV; default: <path>/val or a split")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share held out when there is no validation set")
    image_size: int | None = Field(None, ge=16, le=4096, description="override the backbone's pretrained input size (px)")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability for training")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="RandomResizedCrop area range for training")
    color_jitter: float = Field(0.4, ge=0, description="colour jitter strength for training (0 = off)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (default: min(4, CPU cores))")
    strict: bool = Field(False, description="fail on unreadable or unused files, train/val duplicates (images, texts, masks, boxes), label spelling variants and annotation faults instead of skipping/warning")
    allow_outside_root: bool = Field(False, description="CSV manifests: allow paths that lead outside the manifest's folder (../, absolute, symlinks)")
    decode_cache: bool = Field(True, description="training on images for several epochs: decode and resize each image once (memory-mapped)")
    feature_cache: bool = Field(True, description="frozen backbone: compute features once (cached on disk), train the head on them")
    feature_views: int = Field(0, ge=0, le=64, description="extra augmented views per training image in the feature cache")
    # Text data (task text_classification)
    text_column: str | int | None = Field(None, description="text: column holding the text (default: text, sentence, ...; or an index for headerless files)")
    text_pair_column: str | int | None = Field(None, description="text: second text of sentence pairs (default: sentence2/hypothesis when present)")
    label_column: str | int | None = Field(None, description="text: column holding the label(s) (default: label, labels, category, ...)")
    multi_label: bool = Field(False, description="text: several labels per example (list, or a string split by label_separator)")
    label_separator: str = Field(",", min_length=1, description="text, multi-label: separator inside a label string")
    max_length: int = Field(128, ge=8, le=8192, description="text: tokens per example after truncation (batches pad to their longest)")
    truncation_side: Literal["right", "left"] = Field("right", description="text: which end of a long text is cut")
    # Audio data (task audio_classification); the patterns are Python regular expressions on file names
    label_pattern: str | None = Field(None, description="audio: class from each file name, the pattern's first group, e.g. '^(\\d+)_' (a flat folder of files)")
    group_pattern: str | None = Field(None, description="audio: group (e.g. speaker) from each file name, first group; the validation split keeps each group on one side")
    val_pattern: str | None = Field(None, description="audio: files whose name matches go to validation, e.g. '_[0-4]\\.wav$' (FSDD's official test split)")
    audio: AudioConfig = Field(default_factory=AudioConfig, description="audio front end: see data.audio.*")

    @field_validator("label_pattern", "group_pattern", "val_pattern")
    @classmethod
    def _check_pattern(cls, v: str | None, info: Any) -> str | None:
        import re

        if v is None:
            return v
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        if info.field_name != "val_pattern" and compiled.groups < 1:
            raise ValueError("needs a group in parentheses holding the value, e.g. '^(\\d+)_'")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _check_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 < lo <= hi <= 1):
            raise ValueError("must be two numbers with 0 < low <= high <= 1, e.g. [0.08, 1.0]")
        return v


class ModelConfig(_Section):
    name: str | None = Field(None, description="zoo name, timm:<name>, hf:<name or folder> or file:<path> (default: efficientnet_lite0 for images, minilm for text); see `sftune models`")
    pooling: Literal["auto", "cls", "mean"] = Field("auto", description="text: sentence features from the first token or the mean over tokens (auto: what the model was trained with)")
    pretrained: bool = Field(True, description="load pretrained weights (False: random init, for tests)")
    arch: str | None = Field(None, description="timm architecture; resolved from name, needed for file:<state dict>")
    drop_rate: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier head")


class StrategyConfig(BaseModel):
    """``name`` picks the strategy class; other keys are that class's own fields."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = Field("linear_probe", description="see `sftune strategies`")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskConfig(BaseModel):
    """``name`` picks the task (tasks/: ``sftune tasks``); other keys are that task's own typed
    options (e.g. ``task.ignore_index`` for segmentation), validated by the task.

    ``task: image_classification`` is shorthand for ``task: {name: image_classification}``; a task
    without options is saved in that short form (as bundles written before tasks had options)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = Field("auto", description="auto: detected from the model name and the data; see `sftune tasks`")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .tasks import TASKS

        if v != "auto" and v not in TASKS:
            raise ValueError(f"unknown task {v!r}{did_you_mean(v, TASKS.list())}; available: auto, {', '.join(TASKS.list())}")
        return v

    @model_serializer(mode="wrap")
    def _short(self, handler: Any) -> Any:
        tree = handler(self)
        return tree["name"] if len(tree) == 1 else tree

    def __eq__(self, other: object) -> bool:  # config.task == "text_classification" reads naturally
        if isinstance(other, str):
            return self.name == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  (mutable, like every section)


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, description="per device")
    lr: float | None = Field(None, gt=0, description="head learning rate (default: the strategy's)")
    optimizer: str = Field("adamw", description="any timm optimizer: adamw, sgd (nesterov momentum), lamb, lion, ...")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd-style optimizers")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay; never applied to norms/biases")
    schedule: Literal["cosine", "onecycle", "constant"] = Field("cosine", description="LR schedule per optimizer step: warm-up + cosine, one-cycle, or warm-up + constant")
    warmup_epochs: float | None = Field(None, ge=0, description="linear LR warm-up (cosine, constant schedules); default: 10% of the epochs, at most 1")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0 = off; 0.2-0.8 typical); images, and audio (waveforms mixed)")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha (0 = off; 1.0 typical; images only); with mixup, one of the two per batch")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="share of batches that get mixup/cutmix")
    ema: bool = Field(False, description="validate and save an exponential moving average of the weights")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per step (warmed up: min(decay, (1+n)/(10+n)))")
    accumulate_grad_batches: int = Field(1, ge=1, description="optimizer step every N batches (effective batch = N x batch_size x devices)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradients' global L2 norm to this before each step (default: off)")
    auto_batch_size: bool = Field(False, description="GPU: largest per-step batch that fits (up to the effective batch), accumulating gradients to keep the effective batch")
    monitor: str | None = Field(None, description="metric for early stopping and best checkpoint (default: the task's, e.g. val/acc, val/miou); see `sftune tasks`")
    patience: int = Field(5, ge=0, description="early-stopping patience in epochs (0 = off)")
    seed: int = 42

    @field_validator("monitor")
    @classmethod
    def _check_monitor(cls, v: str | None) -> str | None:
        """A metric some task logs; that the run's own task logs it is checked when it starts."""
        if v is None:
            return v
        from .tasks import TASKS

        known = sorted({m for name in TASKS.list() for m in TASKS.get(name).metrics})
        if v not in known:
            raise ValueError(f"unknown metric {v!r}{did_you_mean(v, known)}; tasks log: {', '.join(known)}")
        return v

    @field_validator("optimizer")
    @classmethod
    def _check_optimizer(cls, v: str) -> str:
        from .optim import check_optimizer_name
        from .errors import SftuneError

        try:
            return check_optimizer_name(v)
        except SftuneError as e:
            raise ValueError(str(e).split(": ", 2)[-1]) from None


class TrainerConfig(_Section):
    """Passed through to the Lightning Trainer (hardware and scale-out)."""

    accelerator: str = Field("auto", description="cpu, gpu, mps, auto")
    devices: int | str = Field("auto", description="number of devices per node, or 'auto'")
    num_nodes: int = Field(1, ge=1)
    distributed: str = Field("auto", description="Lightning distributed strategy: auto, ddp, ddp_spawn, fsdp")
    precision: str = Field("auto", description="auto (bf16-mixed on a GPU that supports it and for transformer text models on a CPU with native bf16, else 32-true), 32-true, bf16-mixed, 16-mixed, bf16-true")
    deterministic: bool = Field(False, description="force deterministic kernels (slower on GPU)")
    inference_precision: Literal["auto", "32", "bf16"] = Field(
        "auto", description="feature extraction and final evaluation: auto = bf16 where the CPU/GPU has native bf16")
    compile: bool = Field(False, description="torch.compile the backbone for training (pays on GPU for longer runs; compiling takes a minute)")
    channels_last: bool = Field(True, description="NHWC memory layout for convolutions (faster on CPU and GPU)")
    progress_bar: bool = True

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, v: str) -> str:
        allowed = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v


class ReportConfig(_Section):
    """What every finished run (and `sftune eval`) writes besides metrics.json: report.json and report.html."""

    enabled: bool = Field(True, description="write report.json and report.html (plots, per-class table, mistakes) into the bundle")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the metrics' 95% intervals (0 = none)")
    mistakes: int = Field(24, ge=0, le=500, description="most confident mistakes shown in the report's gallery")


class LoggingConfig(_Section):
    """Experiment loggers besides the CSV log every run keeps in logs/metrics.csv."""

    tensorboard: bool = Field(False, description="also log to TensorBoard (<bundle>/logs/tensorboard; needs `pip install tensorboard`)")
    mlflow: bool = Field(False, description="also log to MLflow (needs `pip install mlflow-skinny`)")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow server or store (default: $MLFLOW_TRACKING_URI, else ./mlruns)")
    mlflow_experiment: str = Field("sftune", description="MLflow experiment name")


class RunConfig(_Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    # Dotted keys the user gave (config file, flags, --set), whatever their value: --resume refuses
    # any of them that differs from the saved run, even one set back to its default.
    _given: set[str] = PrivateAttr(default_factory=set)

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _task_options(self) -> "RunConfig":
        if self.task.name != "auto":
            from .tasks import create_task

            create_task(self.task.name, self.task.options())  # one-line SftuneError on an unknown/bad key
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SftuneError(f"config file '{p}' does not exist; pass an existing YAML file to -c")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise SftuneError(f"config file '{p}' is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SftuneError(f"config file '{p}' must hold a mapping of sections (data:, model:, train: ...)")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=1e-3'`` -> ``('train.lr', 0.001)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SftuneError(f"--set '{text}' must look like section.key=value, e.g. --set train.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if value in (None, "") and raw.strip() not in ("", "null", "Null", "NULL", "~", "''", '""'):
        value = raw  # YAML block indicators such as '|' or '>' read as empty: the user meant the character
    return key.strip(), value


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SftuneError(f"cannot set '{key}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def build_config(
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge a base tree, a YAML file, dotted overrides and ``--set`` strings; validate once."""
    tree: dict[str, Any] = dict(base or {})
    if file is not None:
        tree = _deep_merge(tree, load_yaml(file))
    for key, value in [*((k, v) for k, v in (overrides or {}).items() if v is not None),
                       *(parse_override(text) for text in sets or [])]:
        if key == "task" and isinstance(value, str):
            key = "task.name"  # `task=X` beside `task.<option>=...`, in either order
        if key.startswith("task") and isinstance(tree.get("task"), str):
            tree["task"] = {"name": tree["task"]}  # shorthand `task: name` (YAML), so options can be set beside it
        set_dotted(tree, key, value)
    config = validate(tree, source=str(file) if file else "config")
    config._given = set(_dotted_keys(tree))
    return config


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"train": {"lr": 1}, "task": "x"}`` -> ``["train.lr", "task.name"]`` (section.key, one level)."""
    keys = []
    for section, values in tree.items():
        if isinstance(values, dict):
            keys += [f"{section}.{key}" for key in values]
        elif section == "task":
            keys.append("task.name")
    return keys


def validate(tree: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise SftuneError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """First problem of a pydantic error as one line naming the field and the fix."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "(root)"
    if not field.isprintable():  # keep the message on one line whatever the key holds
        field = repr(field)[1:-1]
    if err["type"] == "extra_forbidden":
        section = _section_model(loc[:-1])
        known = list(section.model_fields) if section else []
        hint = did_you_mean(loc[-1], known)
        return f"{source}: unknown key '{field}'{hint}; known keys here: {', '.join(known)}"
    msg = err["msg"]
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    extra = f" — {len(exc.errors()) - 1} more problem(s) after fixing this one" if len(exc.errors()) > 1 else ""
    return f"{source}: {field}: {msg}{shown}{extra}"


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def resolve_task(config: RunConfig) -> RunConfig:
    """Fill in the task (detected from the model name, else from the data: tasks/base.py
    detect_task) and the task's default model."""
    from .tasks import TASKS, detect_task

    given = config._given
    if config.task.name == "auto":
        options = config.task.options()
        config.task = TaskConfig(name=detect_task(config), **options)
        config = validate(config.to_dict())  # the detected task validates its options
        config._given = given
    task = TASKS.get(config.task.name)
    if not config.model.name:
        config.model.name = task.default_model
    global_defaults = RunConfig().to_dict()
    for dotted, value in task.defaults.items():  # the task's own defaults, for settings not given
        section, key = dotted.split(".", 1)
        current = getattr(getattr(config, section), key)
        if dotted not in given and current == global_defaults[section][key]:
            setattr(getattr(config, section), key, value)
    return config
