"""The run folder ("bundle"): the one artifact eval, predict, export and reuse read.

Layout::

    config.yaml        resolved RunConfig (model.arch filled in)
    model.safetensors  "backbone.<timm key>" and "head.<key>" tensors (LoRA adapters merged in)
    adapters.safetensors  LoRA runs: only the adapters ("backbone.<peft key>") and the head
    encoder/           text runs: the encoder's config.json + tokenizer, so predict needs nothing else
    labels.json        {"classes": [...]} in class-index order
    metrics.json       final val metrics of the best checkpoint + per-epoch history
    lineage.json       parent model, data fingerprint, split, library versions
    checkpoints/       last.ckpt, for continuing training
    logs/metrics.csv   per-epoch log written by Lightning's CSVLogger

A run trains in ``.<name>.partial/`` beside the final folder and is renamed into
place only when complete, so a crash leaves either no bundle or a whole one —
and the partial folder, from which ``--resume`` continues.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import SftuneError

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
LABELS = "labels.json"
METRICS = "metrics.json"
LINEAGE = "lineage.json"
ENCODER = "encoder"  # text bundles: the encoder's config.json and tokenizer files (no weights)
ADAPTERS = "adapters.safetensors"  # LoRA runs only: the adapters (peft key names) + head
CHECKPOINTS = "checkpoints"
BUNDLE_FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; bundles are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_weights(path: Path, backbone_state: dict[str, torch.Tensor], head_state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {f"backbone.{k}": v for k, v in backbone_state.items()}
    tensors.update({f"head.{k}": v for k, v in head_state.items()})
    save_tensors(path, tensors, metadata)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors write (temp file + rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_weights(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``{"backbone.x": .., "head.y": ..}`` -> (backbone state, head state) with prefixes removed."""
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    head = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
    return backbone, head


# ----------------------------------------------------------------------------- reading


def is_bundle(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def check_bundle(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        partial = partial_dir(p)
        hint = f"; an unfinished run is in {partial}: continue it with sftune train --out {p} --resume" if partial.exists() else ""
        raise SftuneError(f"bundle '{p}' does not exist{hint}")
    if not is_bundle(p):
        raise SftuneError(f"'{p}' is not an sftune bundle (needs {CONFIG} and {WEIGHTS}); pass the --out folder of a finished run")
    return p


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SftuneError(f"'{path}' is missing; the bundle is incomplete") from None
    except json.JSONDecodeError as e:
        raise SftuneError(f"'{path}' is not valid JSON ({e.msg} at line {e.lineno})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path / WEIGHTS))
    except Exception as e:
        raise SftuneError(f"'{path / WEIGHTS}' is not a readable safetensors file ({e})") from None


def read_bundle_backbone(path: Path):
    """The fine-tuned backbone of a bundle (for ``file:<bundle>`` reuse)."""
    from .config import load_yaml

    path = check_bundle(path)
    model = load_yaml(path / CONFIG).get("model", {})
    backbone, _ = read_bundle_model(path, model.get("arch"), source=f"file:{path}", pooling=model.get("pooling"))
    return backbone


def read_bundle_model(path: Path, arch: str | None, source: str, pooling: str | None = None):
    """``(backbone with its weights, head state dict)`` of a checked bundle whose config names ``arch``.

    Text bundles carry their encoder's config and tokenizer in ``encoder/``."""
    if (path / ENCODER).is_dir():
        from .backbones.text import text_backbone_from_folder

        backbone = text_backbone_from_folder(path / ENCODER, pooling if pooling in ("cls", "mean") else "mean", source)
        backbone_state, head_state = split_weights(read_weights(path))
        backbone.load_weights(backbone_state, origin=str(path / WEIGHTS))
        return backbone, head_state
    from .backbones import build_architecture

    if not arch:
        raise SftuneError(f"{path / CONFIG}: model.arch is missing; cannot rebuild the model")
    backbone = build_architecture(arch, source=source)
    backbone_state, head_state = split_weights(read_weights(path))
    backbone.load_weights(backbone_state, origin=str(path / WEIGHTS))
    return backbone, head_state


# ------------------------------------------------------------------------- run folders


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


@dataclass
class RunFolder:
    """Where a run writes while training (``work``) and where it lands (``final``)."""

    final: Path
    work: Path
    is_writer: bool  # only the global-rank-0 process writes files
    _lock_fd: int | None = None

    @property
    def last_checkpoint(self) -> Path:
        return self.work / CHECKPOINTS / "last.ckpt"

    @classmethod
    def open(cls, out: str | Path, resume: bool = False, overwrite: bool = False) -> "RunFolder":
        final = Path(out).expanduser().absolute()
        work = partial_dir(final)
        if global_rank() != 0:
            # Extra DDP/torchrun processes re-run the command: they share rank 0's folder, write nothing.
            return cls(final, work, is_writer=False)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission, read-only or full disk
            raise SftuneError(f"cannot create the output folder '{final.parent}' ({e.strerror or e}); "
                              f"choose another --out") from None
        folder = cls(final, work, is_writer=True)
        folder._lock()  # first, so two processes cannot both pass the checks below
        try:
            if resume:
                if not (work / CHECKPOINTS / "last.ckpt").is_file():
                    done = " it already finished" if is_bundle(final) else " no checkpoint was found"
                    raise SftuneError(f"cannot resume '{final}':{done} ({work / CHECKPOINTS / 'last.ckpt'})")
            else:
                if final.exists() and not overwrite:
                    raise SftuneError(f"output folder '{final}' already exists; pass --overwrite or choose another --out")
                if work.exists():
                    raise SftuneError(
                        f"an unfinished run is in '{work}'; continue it with --resume, or delete that folder to start over"
                    )
            work.mkdir(parents=True, exist_ok=True)
        except BaseException:
            folder.release()
            raise
        return folder

    @property
    def _lock_path(self) -> Path:
        return self.final.parent / f".{self.final.name}.lock"

    def _lock(self) -> None:
        while True:
            try:
                fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as e:  # read-only folder, no permission
                raise SftuneError(f"cannot write in '{self.final.parent}' ({e.strerror or e}); choose another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SftuneError(f"another sftune process is writing '{self.final}'; wait for it or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self._lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)  # the holder released and removed the file meanwhile: lock the new one

    def release(self) -> None:
        if self._lock_fd is not None:
            self._lock_path.unlink(missing_ok=True)  # while still locked, so no one holds a removed file
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard_if_empty(self) -> None:
        """Remove the work folder when a run failed before writing any checkpoint."""
        if self.is_writer and self.work.exists() and not (self.work / CHECKPOINTS).exists():
            shutil.rmtree(self.work, ignore_errors=True)

    def commit(self) -> Path:
        """Rename the finished work folder into place (replacing an old bundle when overwriting).

        Replacing swaps the two folders in one atomic rename (Linux renameat2 RENAME_EXCHANGE),
        so a crash at any instant leaves the old bundle or the new one at ``final``, never neither.
        Elsewhere it takes two renames; a crash between them leaves the old bundle in ``.<name>.old``."""
        if self.final.exists() and exchange_paths(self.work, self.final):
            shutil.rmtree(self.work, ignore_errors=True)  # now holds the old bundle
            return self.final
        trash = None
        if self.final.exists():
            trash = self.final.parent / f".{self.final.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.final, trash)
        os.replace(self.work, self.final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux >= 3.15: renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: this filesystem or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def global_rank() -> int:
    """This process's rank in a distributed run, from the launcher's environment (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) != 0:
            return int(os.environ[var])
    return 0
