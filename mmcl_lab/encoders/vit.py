"""What every ViT-based image tower shares (transformers' CLIP, open_clip, binding towers): the top above the cut with
VPT-deep prompts, and the inputs of each modality drawn as images (photos, depth maps, log-mel spectrograms, video
frames), so that one image tower can take any of them.

A tower family implements VisionTower (its checkpoint's processor in `_pixels`, its layers below the cut in `_run`,
its top in `top`); a registered encoder is one of the modality mixins below on top of it, e.g.
`class ImageCLIP(ImageInput, CLIPVisionTower)`.
"""

from __future__ import annotations

import copy
import inspect
import sys

import numpy as np
import torch
from torch import Tensor, nn

from ..utils import digest
from .base import Tower, TowerTop, as_float_tensor, depth_to_image, log_mel


class ViTTop(TowerTop):
    """The last layers of a vision transformer with VPT-deep prompts (inserted after the class token at each layer and
    dropped after it), then the tower's own head (final norm, pooling, projection). Video: each frame runs on its own
    (its tokens_per_frame cached tokens) and the frame embeddings are averaged (CLIP4Clip's mean pooling)."""

    def __init__(self, layers: list[nn.Module], head: nn.Module, width: int, log_scale: float,
                 tokens_per_frame: int = 0):
        super().__init__()
        self.blocks, self.head = nn.ModuleList(copy.deepcopy(layers)), copy.deepcopy(head)
        self.layers, self.width, self.log_scale = len(layers), width, log_scale
        self.tokens_per_frame = tokens_per_frame  # 0: one image per input

    def forward(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        b = tokens.shape[0]
        frames = tokens.shape[1] // self.tokens_per_frame if self.tokens_per_frame else 1
        if not self.layers:  # the cache holds projected embeddings already: (B, frames, E)
            return tokens.mean(1)
        h = tokens.reshape(b * frames, -1, tokens.shape[-1])  # (B * frames, 1 + P, hidden)
        if prompts is not None and frames > 1:
            prompts = prompts.repeat_interleave(frames, dim=0)  # the clip's prompts for each of its frames
        depth = 0 if prompts is None else prompts.shape[1]
        for k, block in enumerate(self.blocks):
            if k < depth:
                n = prompts.shape[2]
                h = block(torch.cat([h[:, :1], prompts[:, k], h[:, 1:]], dim=1), None)  # (B', 1 + L + P, hidden)
                h = torch.cat([h[:, :1], h[:, 1 + n:]], dim=1)  # prompt outputs dropped: (B', 1 + P, hidden)
            else:
                h = block(h, None)
        z = self.head(h)  # (B * frames, E)
        return z.view(b, frames, -1).mean(1)  # (B, E)


class VisionTower(Tower):
    """A ViT image tower cut `depth` layers below its top: (N, 3, S, S) pixels from the checkpoint's own processor ->
    (N, 1 + P, hidden) hidden states at the cut, or (N, E) projected embeddings at depth 0 (one token per input)."""

    tokens_per_image: int = 0  # 1 + P

    def _pixels(self, images: np.ndarray) -> Tensor:
        """(B, H, W) grey or (B, H, W, 3) uint8 images -> (B, 3, S, S) by the checkpoint's own processor."""
        raise NotImplementedError

    def _run(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, 1 + P, hidden) at the cut, or (N, E) projected at depth 0."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, S, S) -> (B, 1 + P, hidden) or (B, 1, E)
        h = self._run(x)
        return h if self.depth else h[:, None]

    def cache_key(self) -> str:  # this file's code shapes the features too (the modality inputs)
        return f"{super().cache_key()}|{digest(inspect.getsource(sys.modules[__name__]))}"


def as_uint8(images: Tensor) -> np.ndarray:
    """(B, H, W) in [0, 1] -> uint8, as an image file would hold them."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def as_rgb(images: np.ndarray) -> np.ndarray:
    """(B, H, W) grey or (B, H, W, 3) uint8 -> (B, H, W, 3): grey repeated, as PIL's convert("RGB") does."""
    return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


class ImageInput:
    """Grey or colour images, as they are."""

    modality = "image"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return self._pixels(np.asarray(x, dtype=np.uint8))


class DepthInput:
    """Depth maps rendered as grey images (near = bright), as CLIP-based depth studies and LanguageBind do."""

    modality = "depth"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return self._pixels(as_uint8(depth_to_image(as_float_tensor(x))))


class AudioInput:
    """Log-mel spectrograms drawn as grey images (low frequencies at the bottom)."""

    modality = "audio"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return self._pixels(as_uint8(log_mel(as_float_tensor(x), sample_rate).flip(1)))


class VideoInput:
    """Frame by frame: (B, T * (1 + P), hidden) at the cut, or (B, T, E) frame embeddings; the top averages the
    frames' embeddings."""

    modality = "video"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:  # (B, T, H, W[, 3]) -> (B, T, 3, S, S)
        b, t = x.shape[:2]
        frames = self._pixels(np.asarray(x, dtype=np.uint8).reshape(b * t, *x.shape[2:]))
        return frames.view(b, t, *frames.shape[1:])

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 3, S, S) -> (B, T * (1 + P), hidden) or (B, T, E)
        b, t = x.shape[:2]
        return self._run(x.flatten(0, 1)).reshape(b, -1 if self.depth else t, self.dim)

    def top(self) -> ViTTop:
        top = super().top()
        top.tokens_per_frame = self.tokens_per_image if self.depth else 0
        return top
