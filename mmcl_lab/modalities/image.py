"""Images: (N, H, W) uint8 grey. Bundled: MNIST digits; folders of png/jpg/bmp."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality

SIZE = 64  # folder images are resized to SIZE x SIZE


def read_image(path: Path) -> np.ndarray:
    """One image file as (SIZE, SIZE) uint8 grey; 16- and 32-bit grey images are scaled, not clipped."""
    from PIL import Image
    with Image.open(path) as im:
        if im.mode.startswith("I") or im.mode == "F":
            # 16- and 32-bit grey: scale to 8 bits (convert("L") would clip almost everything to white)
            values = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
            im = Image.fromarray(np.clip(values / max(top, values.max()) * 255, 0, 255).round().astype(np.uint8))
        return np.asarray(im.convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)


IMAGE = register_modality(Modality(
    "image", ndim=3, layout="(N, H, W) uint8 grey", data="mnist", encoder="image/efficientnet_lite0",
    template="a photo of the handwritten character {}", corpus="corpus_characters",
    extensions=(".png", ".jpg", ".jpeg", ".bmp"), read=read_image, colour="#4C78A8", marker="circle"))
