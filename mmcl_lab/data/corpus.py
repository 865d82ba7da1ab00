"""The pretraining corpus: the bundled generators run again on samples disjoint from the continual stream's,
with a wider vocabulary and shifted conditions. It stands in for the web-scale pairs a binding model
(ImageBind, LanguageBind) is pretrained on; the data card is data_cards/pretraining_corpus.md.

`shift` (>= 0, config `pretrain.shift`) scales how far the corpus's conditions move away from the stream's:
other writers, fonts and blur for characters; other voices, rates, pitches and noise for words; camera
distance and sensor noise for depth; speed, size and noise for motion. At 0 only the samples differ.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from .base import RawData, register_dataset
from .mnist import DIGITS, MOTIONS, digits_by_class, make_clips
from .shapes import SHAPES, render_shapes
from .speech import SAMPLE_RATE, VOICES, WORDS, speak_clips

LETTERS = tuple(f"letter {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
EXTRA_WORDS = (
    "banana", "castle", "dragon", "forest", "garden", "hammer", "island", "jacket", "kettle", "lemon",
    "magnet", "needle", "orange", "parrot", "rabbit", "saddle", "tomato", "umbrella", "violin", "walnut",
    "zebra", "bottle", "candle", "dolphin", "engine", "feather", "ginger", "harbor", "insect", "jungle",
    "kitten", "ladder", "mirror", "napkin", "oyster", "pepper", "silver", "ticket", "valley", "wizard",
    "basket", "copper", "desert", "falcon", "helmet", "marble")
EXTRA_SHAPES = ("plate", "rod", "disc", "hexagonal prism", "triangular prism", "egg", "tube", "dumbbell",
                "cross", "step")
EXTRA_MOTIONS = ("moving up and left", "moving up and right", "moving down and left", "moving down and right",
                 "shaking", "standing still", "fading in", "fading out")
# Voices the stream never uses: other accents and Klatt variants (Klatt only, for reproducibility: speech.py).
CORPUS_VOICES = ("en+klatt", "en+klatt2", "en+klatt3", "en-gb-scotland+klatt", "en-gb-scotland+klatt4",
                 "en-029+klatt2", "en-029+klatt5", "en-gb-x-rp+klatt3", "en-gb-x-rp+klatt")
CORPUS_STREAM = 2718  # a random stream of its own: the same seed never repeats a stream sample's draws
assert not set(CORPUS_VOICES) & set(VOICES), "the corpus must not share a voice with the stream"


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    """TrueType fonts shipped inside matplotlib (DejaVu Sans, Serif and Mono, upright and slanted)."""
    import matplotlib
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = tuple(str(p) for p in sorted(ttf.glob("DejaVu*.ttf")) if "Display" not in p.name)
    if not fonts:
        raise FileNotFoundError(f"no DejaVu fonts under {ttf}; reinstall matplotlib")
    return fonts


def render_glyph(text: str, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """One character in a random font, size, slant and position, white on black like MNIST: (size, size)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(_fonts()[rng.integers(len(_fonts()))], int(rng.integers(16, 24)))
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (size - (right - left)) / 2 - left + rng.uniform(-2, 2)
    y = (size - (bottom - top)) / 2 - top + rng.uniform(-2, 2)
    draw.text((x, y), text, fill=255, font=font)
    return np.asarray(canvas.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR), dtype=np.uint8)


def _blur_and_noise(images: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Gaussian blur (sigma up to shift) and pixel noise (std 25 * shift) on uint8 images (N, H, W)."""
    out = np.empty(images.shape, dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = gaussian_filter(img.astype(np.float32), rng.uniform(0, shift)) if shift > 0 else img
    return np.clip(out + rng.normal(0, 25 * shift, out.shape), 0, 255).astype(np.uint8)


@register_dataset("corpus_characters", "image", version=2, template="a photo of the handwritten character {}")
def corpus_characters(n_per_class: int, seed: int, shift: float = 1.0) -> RawData:
    """Digits (half MNIST corpus-pool writers, half rendered from fonts) and 26 letters from fonts,
    blurred and noised by shift."""
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    n_hand = n_per_class // 2
    hand, hand_y, hand_src = digits_by_class(n_hand, seed, pool="corpus")
    classes = DIGITS + LETTERS
    glyphs = [str(c) for c in range(10)] + [name[-1] for name in LETTERS]
    font_y = np.concatenate([np.repeat(np.arange(10), n_per_class - n_hand),
                             np.repeat(np.arange(10, len(classes)), n_per_class)])
    fonts = np.stack([render_glyph(glyphs[c], rng) for c in font_y])
    x = _blur_and_noise(np.concatenate([hand, fonts]), rng, shift)
    y = np.concatenate([hand_y, font_y])
    sources = np.concatenate([hand_src, [f"font:{glyphs[c]}" for c in font_y]])
    order = rng.permutation(len(y))
    return RawData("corpus_characters", "image", x[order], y[order], classes, sources=sources[order])


@register_dataset("corpus_motions", "video", version=2, template="a video of a digit {}")
def corpus_motions(n_per_class: int, seed: int, shift: float = 1.0) -> RawData:
    """The stream's 8 motions and 8 more, on MNIST corpus-pool digits, at speeds, sizes and noise
    moved away from the stream's by shift."""
    motions = MOTIONS + EXTRA_MOTIONS
    digits, _, sources = digits_by_class(max(1, -(-n_per_class * len(motions) // 10)), seed, "corpus", reuse=True)
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    clips, labels = make_clips(digits, motions, n_per_class, rng, speed=(6 - 3 * shift, 10 + 4 * shift),
                               scale=(0.9 - 0.2 * shift, 1.2 + 0.2 * shift), noise=8 * (1 + shift))
    order = rng.permutation(len(labels))
    return RawData("corpus_motions", "video", clips[order], labels[order], motions,
                   sources=sources[np.arange(len(labels)) % len(digits)][order])


@register_dataset("corpus_words", "audio", version=2, template="the sound of someone saying the word {}")
def corpus_words(n_per_class: int, seed: int, shift: float = 1.0) -> RawData:
    """The stream's 10 words and 46 more, spoken by voices the stream never uses, at rates, pitches and
    noise levels moved away from the stream's by shift."""
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    words = WORDS + EXTRA_WORDS
    waves, labels = speak_clips(words, n_per_class, rng, voices=CORPUS_VOICES,
                                rate=(int(120 - 40 * shift), int(230 + 40 * shift)),
                                pitch=(max(0, int(20 - 15 * shift)), min(100, int(85 + 15 * shift))),
                                snr_db=(10 - 5 * shift, 30 - 5 * shift))
    order = rng.permutation(len(labels))
    return RawData("corpus_words", "audio", waves[order], labels[order], words, SAMPLE_RATE)


@register_dataset("corpus_shapes", "depth", version=2)
def corpus_shapes(n_per_class: int, seed: int, shift: float = 1.0) -> RawData:
    """The stream's 8 shapes and 10 more, seen from camera distances and with sensor noise moved away
    from the stream's by shift."""
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    names = SHAPES + EXTRA_SHAPES
    maps, labels = render_shapes(names, n_per_class, rng, distance=(2.4 * (1 - 0.1 * shift), 2.4 * (1 + 0.4 * shift)),
                                 noise=0.01 * (1 + 2 * shift), dropout=0.03 * (1 + shift))
    order = rng.permutation(len(labels))
    return RawData("corpus_shapes", "depth", maps[order], labels[order], names)
