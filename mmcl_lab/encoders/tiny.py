"""Tiny random convolutional encoders for every modality: the whole pipeline in seconds, for tests and CI."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Encoder, as_float_tensor, depth_to_image, grey, image_channels, log_mel, register_encoder, seeded_init

TINY_DIM = 32


def _convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(16, TINY_DIM, 3, stride=2, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2))


class TinyEncoder(Encoder):
    """Random two-layer conv net on 1-channel 32x32 inputs -> 4 spatial tokens of 32 features."""

    dim, input_size, license, source = TINY_DIM, 32, "n/a", "random init (seeded by name)"

    def __init__(self):
        super().__init__()
        self.feature_space = f"{self.modality}/tiny"
        self.net = seeded_init(self.feature_space, _convnet)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 32, 32) -> (B, 4, F)
        return self.net(x).flatten(2).transpose(1, 2)


def _resize(x: Tensor) -> Tensor:  # (B, H, W) -> (B, 1, 32, 32), standardised per sample
    # Standardising keeps a random net's responses about the signal, not about its mean brightness.
    x = F.interpolate(x[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True).clamp_min(1e-6)


@register_encoder("image/tiny")
class TinyImageEncoder(TinyEncoder):
    """Tiny encoder for images (colour ones as their luma)."""

    modality = "image"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _resize(grey(image_channels(x)))


@register_encoder("depth/tiny")
class TinyDepthEncoder(TinyEncoder):
    """Tiny encoder for depth maps."""

    modality = "depth"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _resize(depth_to_image(as_float_tensor(x)))


@register_encoder("audio/tiny")
class TinyAudioEncoder(TinyEncoder):
    """Tiny encoder for log-mel spectrograms of waveforms."""

    modality = "audio"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _resize(log_mel(as_float_tensor(x), sample_rate, n_mels=32, n_frames=32))


@register_encoder("video/tiny")
class TinyVideoEncoder(TinyEncoder):
    """Tiny encoder applied per frame: 4 spatial tokens per frame."""

    modality = "video"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        b, t = x.shape[:2]
        return _resize(as_float_tensor(x.reshape(b * t, *x.shape[2:]), 255.0)).view(b, t, 1, 32, 32)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 1, 32, 32) -> (B, T * 4, F)
        return super().forward(x.flatten(0, 1)).reshape(x.shape[0], -1, self.dim)
