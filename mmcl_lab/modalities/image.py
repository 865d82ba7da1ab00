"""Images: (N, H, W) uint8 grey in memory. Bundled: MNIST digits; folders of png/jpg/bmp (grey or colour),
read in their own colour and size and brought to each encoder's resolution by `conform_image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality


def read_image(path: Path) -> np.ndarray:
    """One image file in its own size: (H, W) uint8 for grey files, (H, W, 3) uint8 for everything else;
    16- and 32-bit grey images are scaled, not clipped."""
    from PIL import Image
    with Image.open(path) as im:
        if im.mode.startswith("I") or im.mode == "F":
            # 16- and 32-bit grey: scale to 8 bits (convert("L") would clip almost everything to white)
            values = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
            return np.clip(values / max(top, values.max()) * 255, 0, 255).round().astype(np.uint8)
        if im.mode in ("L", "1", "LA"):
            return np.asarray(im.convert("L"), dtype=np.uint8)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def conform_image(x: np.ndarray, size: int) -> np.ndarray:
    """One decoded image -> (size, size, 3) uint8 colour (a grey image in three equal channels), bilinear."""
    from PIL import Image
    im = Image.fromarray(x).convert("RGB")
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)


IMAGE = register_modality(Modality(
    "image", ndim=3, layout="(N, H, W) uint8 grey", data="mnist",
    encoder="image/efficientnet_lite0", template="a photo of a {}", corpus="corpus_characters",
    extensions=(".png", ".jpg", ".jpeg", ".bmp"), read=read_image, colour="#4C78A8", marker="circle",
    conform=conform_image))
