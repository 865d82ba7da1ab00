"""Audio: (N, L) float32 waveforms in [-1, 1] at the dataset's sample rate. Bundled: spoken words synthesised
by espeak-ng; folders of wav/flac/ogg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality

SAMPLE_RATE, MAX_SECONDS = 22050, 5.0  # folder audio: mono at SAMPLE_RATE, the first MAX_SECONDS (zero-padded)
MIN_RATE = 1000  # below this a file is not sound to learn from: resampling would invent it


def read_audio(path: Path) -> np.ndarray:
    """One sound file as a mono (SAMPLE_RATE * MAX_SECONDS,) float32 waveform."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if not len(wav):
        raise ValueError("empty file: no audio samples")
    if rate < MIN_RATE:
        raise ValueError(f"sample rate {rate} Hz is below {MIN_RATE} Hz")
    wav = torch.from_numpy(wav.mean(1))
    if rate != SAMPLE_RATE:
        wav = AF.resample(wav, rate, SAMPLE_RATE)
    out = np.zeros(int(SAMPLE_RATE * MAX_SECONDS), dtype=np.float32)
    clip = wav.numpy()[: len(out)]
    out[: len(clip)] = clip
    return out


AUDIO = register_modality(Modality(
    "audio", ndim=2, layout="(N, L) float32 waveforms in [-1, 1]", data="spoken_words",
    encoder="audio/efficientnet_lite0", template="the sound of a {}", corpus="corpus_words",
    extensions=(".wav", ".flac", ".ogg"), read=read_audio, colour="#F58518", marker="diamond",
    sample_rate=SAMPLE_RATE))
