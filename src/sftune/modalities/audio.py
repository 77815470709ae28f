"""Audio: replay records by path + SHA-256 (as images), new data read as training reads it,
a path,label manifest, and report cards with a spectrogram and an embedded, playable clip."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any, Callable

from ..errors import SftuneError
from .base import MODALITIES, Modality
from .images import replay_files, sample_of

GALLERY_SECONDS = 4.0  # the report embeds at most this much of each clip (16-bit WAV data URI)
GALLERY_RATE = 16_000  # clips above this rate are resampled for the report (smaller pages)


class Audio(Modality):
    name = "audio"
    items_are_files = True

    def replay_item(self, sample: Any, digests: dict[Path, str]) -> dict[str, Any]:
        return {"path": str(Path(sample.path).absolute()), "label": sample.label, "sha256": digests.get(sample.path)}

    def replay_samples(self, items: list[dict[str, Any]], log: Callable[[str], None]) -> list[Any]:
        from ..data.audio_sources import check_audio

        def check(present: list[Any]) -> tuple[list[Any], dict[Path, str]]:
            good, _, digests, _, _ = check_audio(present, strict=False)
            return good, digests

        return replay_files(items, check, log)

    def split_new(self, path: Path, old_config: dict[str, Any], val_fraction: float,
                  seed: int) -> tuple[list[Any], list[Any], str]:
        """New labeled audio read with the old run's file-name patterns (labels, groups)."""
        from ..data.audio_sources import find_labeled_audio

        c = old_config.get("data", {})
        data = find_labeled_audio(path, None, val_fraction, seed, strict=False, label_pattern=c.get("label_pattern"),
                                  group_pattern=c.get("group_pattern"))
        return data.train, data.val, data.fingerprint

    def write_training_data(self, folder: Path, samples: list[Any]) -> tuple[Path, dict[str, Any]]:
        path = folder / "manifest.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows([str(Path(s.path).absolute()), s.label] for s in samples)
        # The manifest carries the labels; the old run's patterns must not re-read them from names.
        return path, {"label_pattern": None, "group_pattern": None, "val_pattern": None}

    def outputs_on(self, model: Any, path: Path, limit: int, seed: int, text_column: Any = None) -> Any:
        """Audio the model can read as labeled (class folders of its classes, a manifest, names
        matching its data.label_pattern) is labeled; anything else is unlabeled audio."""
        from ..data.audio_sources import check_audio, find_unlabeled_audio, labeled_audio_samples
        from ..data.sources import Sample
        from ..eval.outputs import gather

        if not path.exists():
            raise SftuneError(f"data '{path}' does not exist; pass a folder of audio files (or of class folders) or a CSV manifest")
        samples = None
        try:
            found = labeled_audio_samples(path, model.config.data.label_pattern, model.config.data.val_pattern)
            if {s.label for s in found} <= set(model.classes):
                samples = found
        except SftuneError:
            pass  # no class folders, no manifest: unlabeled audio
        labeled = samples is not None
        if samples is None:
            samples = [Sample(f, "") for f in find_unlabeled_audio([path])]
        good, skipped, _, _, _ = check_audio(sample_of(samples, limit, seed), strict=False)
        if not good:
            raise SftuneError(f"no usable audio in '{path}'")
        if labeled:
            return model.outputs(good, features=True)
        return gather(model.classes, [str(s.path) for s in good], model._batches(good, 64, features=True),
                      skipped=skipped)

    def scored_batches(self, model: Any, samples: list[Any]) -> list[tuple[Any, Any]]:
        from ..data.audio_sources import check_audio

        good, _, _, _, _ = check_audio(samples, strict=False)
        return list(model.logits(good, 64))

    def gallery_media(self, item: str, thumbnails: bool) -> str | None:
        """A report card's media: the clip's log-mel spectrogram (PNG) and an ``<audio controls>``
        player with the clip as a WAV data URI (at most GALLERY_SECONDS s)."""
        if not thumbnails:
            return None
        name = f"<div class=\"muted\" style=\"word-break:break-all\">{html.escape(Path(item).name)}</div>"
        try:
            png, wav = audio_card(item)
        except Exception:  # a gallery entry must never break the report
            return "<div class=\"muted\">(audio not readable)</div>" + name
        return (f"<img src=\"data:image/png;base64,{png}\" alt=\"spectrogram of {html.escape(item)}\">"
                f"<audio controls preload=\"none\" style=\"width:100%\" src=\"data:audio/wav;base64,{wav}\"></audio>"
                + name)


def audio_card(path: str | Path) -> tuple[str, str]:
    """(base64 PNG of the log-mel spectrogram, base64 16-bit mono WAV) of the first
    GALLERY_SECONDS s of ``path``. Raises AudioError for unusable files."""
    import numpy as np
    import soundfile as sf
    import torch
    from PIL import Image

    from ..backbones.audio import LogMel
    from ..data.audio import read_audio, resample

    audio = read_audio(path)
    rate = min(audio.rate, GALLERY_RATE)
    samples = resample(audio.samples, audio.rate, rate)[: int(GALLERY_SECONDS * rate)]
    with torch.no_grad():
        spec = LogMel(rate, n_mels=64)(torch.from_numpy(np.ascontiguousarray(samples))[None])[0, 0].numpy()
    from matplotlib import colormaps

    rgb = (colormaps["magma"](spec[::-1])[..., :3] * 255).astype(np.uint8)  # low frequencies at the bottom
    image = Image.fromarray(rgb).resize((min(320, max(160, rgb.shape[1] * 2)), 128), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    wav = io.BytesIO()
    sf.write(wav, samples, rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode(), base64.b64encode(wav.getvalue()).decode()


MODALITIES.register("audio")(Audio())
