"""The espeak-ng library that espeakng-loader bundles, run in a child process of its own (speech.synthesise).

This file imports nothing from mmcl_lab, so that a child loads it by path and starts in a fraction of a second,
without importing the package (torch among it): `serve()` reads a JSON plan of utterances on stdin and writes an
.npz of their samples on stdout.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

SAMPLE_RATE = 22050

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


def serve() -> None:
    """The child's side of speech.synthesise(): a JSON plan on stdin -> an .npz of utterances on stdout."""
    import io
    import json
    import sys

    waves = [speak(*args) for args in json.load(sys.stdin)]
    buf = io.BytesIO()
    np.savez(buf, lengths=np.array([len(w) for w in waves]), samples=np.concatenate(waves))
    sys.stdout.buffer.write(buf.getvalue())
