"""The embedded default job: fine-tune offline EfficientNet-Lite0 on UCI handwritten digits.

scikit-learn ships the digits (1,797 8x8 grayscale images, 10 classes) inside
its wheel, so nothing is downloaded. They are written out once as an image
folder, the same kind of input a user brings.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SftuneError

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def write_digits_folder(root: str | Path) -> Path:
    """``root/<digit>/<index>.png`` for every digit image (skipped if already there)."""
    root = Path(root)
    marker = root / ".complete"
    if marker.exists():
        return root
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SftuneError("the demo needs scikit-learn for its digits data: pip install 'sftune[demo]'") from None
    import numpy as np
    from PIL import Image

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        # Pixel values are 0..16 (counts of set bits in 4x4 cells); scale to 0..255, ink dark on white.
        image = 255 - np.round(pixels * (255 / 16)).astype(np.uint8)
        Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png")
    marker.touch()
    return root
