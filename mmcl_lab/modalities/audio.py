"""Audio: (N, L) float32 waveforms in [-1, 1] at the dataset's sample rate. Bundled: spoken words synthesised
by espeak-ng; folders of wav/flac/ogg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality

SAMPLE_RATE, MAX_SECONDS = 22050, 5.0  # folder audio: mono at SAMPLE_RATE, the first MAX_SECONDS (zero-padded)
MIN_RATE = 1000  # below this a file is not sound to learn from: resampling would invent it


def read_audio(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """One sound file as a mono (rate * MAX_SECONDS,) float32 waveform (rate: SAMPLE_RATE, or the one an encoder's
    processor asks for)."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    wav, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    if not len(wav):
        raise ValueError("empty file: no audio samples")
    if file_rate < MIN_RATE:
        raise ValueError(f"sample rate {file_rate} Hz is below {MIN_RATE} Hz")
    wav = torch.from_numpy(wav.mean(1))
    if file_rate != rate:
        wav = AF.resample(wav, file_rate, rate)
    out = np.zeros(int(rate * MAX_SECONDS), dtype=np.float32)
    clip = wav.numpy()[: len(out)]
    out[: len(clip)] = clip
    return out


AUDIO = register_modality(Modality(
    "audio", ndim=2, layout="(N, L) float32 waveforms in [-1, 1]", data="spoken_words",
    encoder="audio/efficientnet_lite0", template="the sound of a {}", corpus="corpus_words",
    extensions=(".wav", ".flac", ".ogg"), read=read_audio, colour="#F58518", marker="diamond",
    sample_rate=SAMPLE_RATE))
