"""Video: (N, T, H, W) uint8 grey clips. Bundled: moving MNIST digits; folders of mp4/avi/mov/webm."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality

SIZE, FRAMES = 64, 8  # folder clips: FRAMES frames sampled evenly, grey SIZE x SIZE


def read_video(path: Path) -> np.ndarray:
    """One clip as (FRAMES, SIZE, SIZE) uint8 grey, decoded in two passes so that memory stays bounded."""
    import av
    from PIL import Image

    with av.open(str(path)) as container:  # first pass: count the frames
        if not container.streams.video:
            raise ValueError("no video frames (the file has no video stream)")
        total = sum(1 for _ in container.decode(video=0))
    if not total:
        raise ValueError("no video frames")
    picks = list(np.linspace(0, total - 1, FRAMES).round().astype(int))
    kept = {}
    with av.open(str(path)) as container:  # second pass: keep only the frames picked
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:
                kept[i] = np.asarray(frame.to_image().convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)
            if i >= picks[-1]:
                break
    return np.stack([kept[i] for i in picks])


VIDEO = register_modality(Modality(
    "video", ndim=4, layout="(N, T, H, W) uint8 grey clips", data="moving_digits",
    encoder="video/efficientnet_lite0", template="a video of a person doing {}", corpus="corpus_motions",
    extensions=(".mp4", ".avi", ".mov", ".webm"), read=read_video, colour="#E45756", marker="triangle-up"))
