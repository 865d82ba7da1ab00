"""Spoken words synthesised by the espeak-ng library that espeakng-loader bundles (espeak.py, in child processes)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import espeak
from .base import RawData, register_dataset

WORDS = ("apple", "river", "yellow", "mountain", "guitar", "window", "tiger", "pencil", "ocean", "rocket")
# Klatt-synthesiser voices only: espeak-ng's default synthesiser adds jitter that no API seeds (two syntheses of
# one word differ), while these give the same samples for the same calls, so the dataset is reproducible.
VOICES = ("en-us+klatt", "en-us+klatt2", "en-us+klatt3", "en-us+klatt4", "en-us+klatt5", "en-us+klatt6",
          "en+klatt6", "en-gb-scotland+klatt6", "en-029+klatt6", "en-gb-x-rp+klatt6")
SAMPLE_RATE = espeak.SAMPLE_RATE
CLIP_SECONDS = 1.2

# Utterances per child process. Each chunk is synthesised by a fresh library, so the samples depend on the plan and
# this number only, never on how many children run at once.
CHUNK = 256


def synthesise(plan: list[tuple[str, str, int, int]]) -> list[np.ndarray]:
    """espeak.speak() for every (word, voice, rate, pitch), CHUNK utterances per fresh child process, as many at a
    time as there are cores: the Klatt synthesiser keeps state across utterances that espeak_Terminate does not
    reset, so only a fresh library is reproducible. A plain subprocess (not multiprocessing's spawn) works from
    scripts without an `if __name__` guard, and the child loads espeak.py by its path, not the package."""
    chunks = [plan[i:i + CHUNK] for i in range(0, len(plan), CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), os.cpu_count() or 1))) as pool:
        return [wave for waves in pool.map(_synthesise_chunk, chunks) for wave in waves]


_CHILD = ("import importlib.util as u, sys; spec = u.spec_from_file_location('mmcl_espeak', sys.argv[1]); "
          "m = u.module_from_spec(spec); spec.loader.exec_module(m); m.serve()")


def _synthesise_chunk(plan: list[tuple[str, str, int, int]]) -> list[np.ndarray]:
    done = subprocess.run([sys.executable, "-c", _CHILD, espeak.__file__], input=json.dumps(plan).encode(),
                          capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng synthesis failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    with np.load(io.BytesIO(done.stdout), allow_pickle=False) as f:
        return np.split(f["samples"], np.cumsum(f["lengths"])[:-1])


def speak_clips(words: tuple[str, ...], n_per_class: int, rng: np.random.Generator,
                voices: tuple[str, ...] = VOICES, rate: tuple[int, int] = (120, 230),
                pitch: tuple[int, int] = (20, 85),
                snr_db: tuple[float, float] = (10, 30)) -> tuple[np.ndarray, np.ndarray]:
    """Clips (N, 1.2 s) of each word spoken n_per_class times by random voices, rates and pitches, with a
    random gain and onset and Gaussian noise at a random SNR; and their labels."""
    length = int(SAMPLE_RATE * CLIP_SECONDS)
    labels = np.repeat(np.arange(len(words)), n_per_class)
    plan = [(words[label], voices[rng.integers(len(voices))], int(rng.integers(*rate)),
             int(rng.integers(*pitch))) for label in labels]
    waves = np.zeros((len(labels), length), dtype=np.float32)
    for i, wav in enumerate(synthesise(plan)):
        wav = wav[:length] * rng.uniform(0.5, 1.0)
        start = int(rng.integers(0, length - len(wav) + 1))
        waves[i, start:start + len(wav)] = wav
        noise_scale = np.sqrt(np.mean(wav**2) / 10 ** (rng.uniform(*snr_db) / 10))
        waves[i] += rng.normal(0, noise_scale, length).astype(np.float32)
    return np.clip(waves, -1, 1), labels


@register_dataset("spoken_words", "audio", version=3, template="the sound of someone saying the word {}")
def spoken_words(n_per_class: int, seed: int) -> RawData:
    """Ten words, each spoken by random voices, speeds and pitches, shifted in time, with noise."""
    rng = np.random.default_rng(seed)
    waves, labels = speak_clips(WORDS, n_per_class, rng)
    order = rng.permutation(len(labels))
    return RawData("spoken_words", "audio", waves[order], labels[order], WORDS, SAMPLE_RATE)
