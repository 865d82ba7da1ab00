"""transformers backbones for users who have the weights: CLIP, CLAP and VideoMAE.

Pass a local directory or a hub id after "@", e.g. modalities.image.encoder="image/clip@/models/clip-vit-b32".
Nothing is downloaded unless you name a hub id with network access; tests build tiny models from configs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Encoder, as_float_tensor, depth_to_image, image_channels, register_encoder, safetensors_only

CLIP_MEAN = torch.tensor([0.4815, 0.4578, 0.4082]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1)


class _CLIPVision(Encoder):
    """CLIP's vision tower: patch tokens plus the class token, (B, 1 + P, hidden)."""

    license, source = "see the checkpoint's model card", "transformers CLIPVisionModel"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import CLIPVisionModel

        self.model = CLIPVisionModel.from_pretrained(safetensors_only(path, f"{self.modality}/clip"),
                                                     use_safetensors=True)
        self.size = self.input_size = self.model.config.image_size
        self.dim = self.model.config.hidden_size
        self.feature_space = f"{self.modality}/clip:{path}"

    def _pixels(self, images: Tensor) -> Tensor:  # (B, H, W) or (B, C, H, W) in [0, 1] -> (B, 3, S, S) normalised
        x = images[:, None] if images.ndim == 3 else images
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - CLIP_MEAN) / CLIP_STD

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, S, S) -> (B, 1 + P, hidden)
        return self.model(pixel_values=x).last_hidden_state


@register_encoder("image/clip")
class ImageCLIP(_CLIPVision):
    """CLIP vision tower on grey or colour images."""

    modality = "image"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return self._pixels(image_channels(x))


@register_encoder("depth/clip")
class DepthCLIP(_CLIPVision):
    """CLIP vision tower on depth maps rendered as grey images (near = bright)."""

    modality = "depth"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return self._pixels(depth_to_image(as_float_tensor(x)))


@register_encoder("video/clip")
class VideoCLIP(_CLIPVision):
    """CLIP vision tower per frame; the class token of each frame is one token."""

    modality = "video"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        b, t = x.shape[:2]
        frames = self._pixels(as_float_tensor(x.reshape(b * t, *x.shape[2:]), 255.0))
        return frames.view(b, t, *frames.shape[1:])

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 3, S, S) -> (B, T, hidden)
        b, t = x.shape[:2]
        return super().forward(x.flatten(0, 1))[:, 0].view(b, t, -1)


@register_encoder("video/videomae")
class VideoMAE(Encoder):
    """VideoMAE encoder tokens (B, patches, hidden) on grey clips resampled to its frame count."""

    modality, license, source = "video", "see the checkpoint's model card", "transformers VideoMAEModel"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import VideoMAEModel

        self.model = VideoMAEModel.from_pretrained(safetensors_only(path, "video/videomae"), use_safetensors=True)
        cfg = self.model.config
        self.size, self.frames, self.dim = cfg.image_size, cfg.num_frames, cfg.hidden_size
        self.feature_space = f"video/videomae:{path}"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        clips = as_float_tensor(x, 255.0)  # (B, T, H, W)
        idx = torch.linspace(0, clips.shape[1] - 1, self.frames).round().long()
        frames = F.interpolate(clips[:, idx], size=(self.size, self.size), mode="bilinear")
        frames = frames[:, :, None].expand(-1, -1, 3, -1, -1)  # (B, T', 3, S, S)
        return (frames - CLIP_MEAN[None]) / CLIP_STD[None]

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).last_hidden_state


@register_encoder("audio/clap")
class AudioCLAP(Encoder):
    """CLAP audio tower: its pooled embedding as a single token, (B, 1, projection_dim)."""

    modality, license, source = "audio", "see the checkpoint's model card", "transformers ClapModel"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import ClapFeatureExtractor, ClapModel

        self.model = ClapModel.from_pretrained(safetensors_only(path, "audio/clap"), use_safetensors=True)
        self.extractor = ClapFeatureExtractor.from_pretrained(path)
        self.dim = self.model.config.projection_dim
        self.feature_space = f"audio/clap:{path}"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        import torchaudio.functional as AF

        target = self.extractor.sampling_rate
        waves = AF.resample(as_float_tensor(x), sample_rate, target) if sample_rate != target else as_float_tensor(x)
        fusion = getattr(self.model.config.audio_config, "enable_fusion", False)  # must match the checkpoint
        feats = self.extractor(list(waves.numpy()), sampling_rate=target, return_tensors="pt",
                               truncation="fusion" if fusion else "rand_trunc")
        return feats["input_features"]

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, frames, mels) -> (B, 1, D)
        out = self.model.get_audio_features(input_features=x)
        emb = out if isinstance(out, Tensor) else out.pooler_output
        return emb[:, None]
