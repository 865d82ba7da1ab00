"""Spoken words synthesised in-process by the espeak-ng library that espeakng-loader bundles."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from .base import RawData, register_dataset

WORDS = ("apple", "river", "yellow", "mountain", "guitar", "window", "tiger", "pencil", "ocean", "rocket")
# Klatt-synthesiser voices only: espeak-ng's default synthesiser adds jitter that no API seeds (two syntheses of
# one word differ), while these give the same samples for the same calls, so the dataset is reproducible.
VOICES = ("en-us+klatt", "en-us+klatt2", "en-us+klatt3", "en-us+klatt4", "en-us+klatt5", "en-us+klatt6",
          "en+klatt6", "en-gb-scotland+klatt6", "en-029+klatt6", "en-gb-x-rp+klatt6")
SAMPLE_RATE = 22050
CLIP_SECONDS = 1.2

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()
_engine: dict = {}


def _espeak():
    """Load and initialise libespeak-ng once per process (it keeps global state)."""
    if not _engine:
        import espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        sample_rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x8000)
        if sample_rate != SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng initialisation failed (returned {sample_rate})")
        chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        callback = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(callback)
        _engine.update(lib=lib, chunks=chunks, callback=callback)  # keep the callback alive
    return _engine


def speak(word: str, voice: str = "en", rate: int = 160, pitch: int = 50) -> np.ndarray:
    """One utterance as float32 samples in [-1, 1] at 22,050 Hz."""
    engine = _espeak()
    lib, chunks = engine["lib"], engine["chunks"]
    with _lock:
        chunks.clear()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng does not know the voice {voice!r}")
        lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE, words per minute
        lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH, 0-100
        text = word.encode()
        lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None)
        samples = np.concatenate(chunks) if chunks else np.zeros(1, np.int16)
    return samples.astype(np.float32) / 32768.0


def _serve() -> None:
    """The child's side of synthesise(): a JSON plan on stdin -> an .npz of utterances on stdout."""
    import io
    import json
    import sys

    waves = [speak(*args) for args in json.load(sys.stdin)]
    buf = io.BytesIO()
    np.savez(buf, lengths=np.array([len(w) for w in waves]), samples=np.concatenate(waves))
    sys.stdout.buffer.write(buf.getvalue())


def synthesise(plan: list[tuple[str, str, int, int]]) -> list[np.ndarray]:
    """speak() for every (word, voice, rate, pitch), in a fresh Python process: the Klatt synthesiser keeps
    state across utterances that espeak_Terminate does not reset, so only a fresh library is reproducible. A
    plain subprocess (not multiprocessing's spawn) works from scripts without an `if __name__` guard."""
    import io
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from mmcl_lab.data.speech import _serve; _serve()"],
                          input=json.dumps(plan).encode(), capture_output=True)
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


@register_dataset("spoken_words", "audio", version=2, template="the sound of someone saying the word {}")
def spoken_words(n_per_class: int, seed: int) -> RawData:
    """Ten words, each spoken by random voices, speeds and pitches, shifted in time, with noise."""
    rng = np.random.default_rng(seed)
    waves, labels = speak_clips(WORDS, n_per_class, rng)
    order = rng.permutation(len(labels))
    return RawData("spoken_words", "audio", waves[order], labels[order], WORDS, SAMPLE_RATE)
