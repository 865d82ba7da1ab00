"""VideoMAE (transformers) for users who have the weights: its encoder tokens, with the checkpoint's own video
processor. Pass a local directory after "@": modalities.video.encoder="video/videomae@/models/videomae-base".
CLIP and binding towers are in clip.py, CLAP in clap.py."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .base import Encoder, register_encoder, safetensors_only


@register_encoder("video/videomae")
class VideoMAE(Encoder):
    """VideoMAE encoder tokens (B, patches, hidden) on clips resampled to its frame count."""

    modality, license, source = "video", "see the checkpoint's model card", "transformers VideoMAEModel"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import AutoImageProcessor, VideoMAEModel

        self.model = VideoMAEModel.from_pretrained(safetensors_only(path, "video/videomae"), use_safetensors=True)
        self.processor = AutoImageProcessor.from_pretrained(path)
        cfg = self.model.config
        self.frames, self.dim, self.input_size = cfg.num_frames, cfg.hidden_size, cfg.image_size
        self.feature_space = f"video/videomae:{path}"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        idx = np.linspace(0, x.shape[1] - 1, self.frames).round().astype(int)  # the model's frame count
        clips = np.asarray(x, dtype=np.uint8)[:, idx]  # (B, T', H, W) or (B, T', H, W, 3)
        clips = np.repeat(clips[..., None], 3, axis=-1) if clips.ndim == 4 else clips
        return self.processor([list(c) for c in clips], return_tensors="pt")["pixel_values"]  # (B, T', 3, S, S)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).last_hidden_state

    def cache_key(self) -> str:
        return f"{super().cache_key()}|{self.processor.to_json_string()}"
