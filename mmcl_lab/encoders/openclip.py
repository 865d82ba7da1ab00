"""open_clip models (LAION's OpenCLIP, EVA-, DFN- and MetaCLIP checkpoints in its format) as real aligned models: the
vision tower for images, depth maps, video frames and log-mel images, the text tower for the class texts, and the
checkpoint's own preprocessing transform and tokenizer. Optional: `pip install mmcl_lab[open_clip]`.

`<modality>/openclip@DIR` and `text/openclip@DIR` read a local directory in open_clip's hub layout
(open_clip_config.json beside open_clip_model.safetensors), through open_clip's own `local-dir:` loader; nothing is
downloaded. Prompts inside the tower (model.prompt_depth > 0) need a ViT tower pooled from its class token or its
patch mean (CLIP, OpenCLIP, EVA); towers from timm or with attentional pooling (CoCa) run at prompt_depth 0.
SigLIP checkpoints load, but their logit bias is not used (logits are cosine times scale). Licences are the
checkpoints' own (LAION's OpenCLIP weights: MIT; see each model card).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TextEncoder, register_encoder, safetensors_only, split_layers
from .vit import AudioInput, DepthInput, ImageInput, VideoInput, VisionTower, ViTTop, as_rgb


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("the openclip encoders need open_clip: pip install 'mmcl_lab[open_clip]'") from e
    return open_clip


@functools.lru_cache(maxsize=8)
def load_open_clip(path: str) -> SimpleNamespace:
    """The open_clip checkpoint at path, loaded once per process (several modalities share one model): the model,
    its evaluation transform, its tokenizer and its log logit scale."""
    open_clip = _open_clip()
    where = Path(path).expanduser()  # callers have checked it with safetensors_only, naming their encoder
    if not (where / "open_clip_config.json").is_file():
        raise ValueError(f"{where}: no open_clip_config.json (expected open_clip's hub layout: open_clip_config.json "
                         "and open_clip_model.safetensors)")
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{where}", weights_only=True)
    model.eval().requires_grad_(False)
    return SimpleNamespace(model=model, transform=transform, tokenizer=open_clip.get_tokenizer(f"local-dir:{where}"),
                           log_scale=model.logit_scale.item(),
                           embed_dim=open_clip.get_model_config(f"local-dir:{where}")["embed_dim"])  # E


class OpenCLIPHead(nn.Module):
    """open_clip's head of a ViT on its last hidden states: final norm and pooling in the tower's order (class token
    or patch mean), then the projection: (N, 1 + P, hidden) -> (N, E)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.ln_post, self.proj = visual.ln_post, visual.proj  # proj: (hidden, E), or None when unprojected
        self.pool_type, self.final_ln_after_pool = visual.pool_type, visual.final_ln_after_pool

    def forward(self, h: Tensor) -> Tensor:
        from open_clip.transformer import VisionTransformer

        if not self.final_ln_after_pool:
            h = self.ln_post(h)
        pooled, _ = VisionTransformer._global_pool(self, h)  # open_clip's own pooling, by pool_type
        if self.final_ln_after_pool:
            pooled = self.ln_post(pooled)
        return pooled if self.proj is None else pooled @ self.proj


class OpenCLIPVisionTower(VisionTower):
    """An open_clip vision tower, cut `depth` layers below its top: (B, 3, S, S) pixels from the checkpoint's own
    transform -> (B, 1 + P, hidden) hidden states at the cut, or (B, 1, E) projected embeddings at depth 0."""

    source = "open_clip vision tower + the checkpoint's own transform"
    license = "the checkpoint's own (see its model card)"

    def __init__(self, path: str = "", depth: int = 0):
        super().__init__()
        parts = load_open_clip(safetensors_only(path, f"{self.modality}/openclip"))
        self.model, self.visual, self.transform, self.path = parts.model, parts.model.visual, parts.transform, path
        self.log_scale, self.depth, self.dim = parts.log_scale, depth, parts.embed_dim
        if depth:
            self.dim = self._check_prompt_ready(path).width
            self.cut = split_layers(self.visual.transformer.resblocks, depth, f"the open_clip vision tower at {path}")
            self.head = OpenCLIPHead(self.visual)
            self.tokens_per_image = 1 + self.visual.grid_size[0] * self.visual.grid_size[1]
        size = getattr(self.visual, "image_size", None)
        self.input_size = size[0] if isinstance(size, tuple) else size or 224
        self.feature_space = f"{self.modality}/openclip:{path}"

    def _check_prompt_ready(self, path: str) -> nn.Module:
        """The tower's transformer, if prompts can go inside it; else an error saying to set prompt_depth=0."""
        from open_clip.transformer import VisionTransformer

        v = self.visual
        if not isinstance(v, VisionTransformer) or v.attn_pool is not None or v.pool_type not in ("tok", "avg"):
            raise ValueError(f"{path}: model.prompt_depth>0 needs a ViT tower pooled by class token or patch mean; "
                             f"this one is {type(v).__name__}: set model.prompt_depth=0")
        if not v.transformer.batch_first:
            raise ValueError(f"{path}: a sequence-first transformer; prompts need batch_first (open_clip >= 2.24)")
        return v.transformer

    def _pixels(self, images: np.ndarray) -> Tensor:
        from PIL import Image

        return torch.stack([self.transform(Image.fromarray(i)) for i in as_rgb(images)])  # (B, 3, S, S)

    def _run(self, pixels: Tensor) -> Tensor:
        if not self.depth:
            return self.model.encode_image(pixels)  # (N, E), projected, not normalised
        h = self.visual._embeds(pixels)  # (N, 1 + P, hidden): patches, class token, positions, ln_pre
        for block in self.visual.transformer.resblocks[: self.cut]:
            h = block(h, None)
        return h

    def top(self) -> ViTTop:
        if not self.depth:
            return ViTTop([], nn.Identity(), 0, self.log_scale)
        return ViTTop(list(self.visual.transformer.resblocks[self.cut:]), self.head, self.dim, self.log_scale)

    def text_tower(self) -> TextEncoder:
        return OpenCLIPText(self.path)

    def cache_key(self) -> str:  # the transform's settings are part of what the features depend on
        return f"{super().cache_key()}|{self.transform}"


@register_encoder("image/openclip")
class ImageOpenCLIP(ImageInput, OpenCLIPVisionTower):
    """open_clip's vision tower on grey or colour images."""


@register_encoder("depth/openclip")
class DepthOpenCLIP(DepthInput, OpenCLIPVisionTower):
    """open_clip's vision tower on depth maps rendered as grey images."""


@register_encoder("audio/openclip")
class AudioOpenCLIP(AudioInput, OpenCLIPVisionTower):
    """open_clip's vision tower on log-mel spectrograms drawn as grey images."""


@register_encoder("video/openclip")
class VideoOpenCLIP(VideoInput, OpenCLIPVisionTower):
    """open_clip's vision tower frame by frame; the top averages the frames' embeddings."""


@register_encoder("text/openclip")
class OpenCLIPText(TextEncoder):
    """open_clip's text tower with the checkpoint's tokenizer: projected, L2-normalised embeddings (N, E)."""

    source = "open_clip text tower + the checkpoint's tokenizer"
    license = "the checkpoint's own (see its model card)"

    def __init__(self, path: str = ""):
        super().__init__()
        parts = load_open_clip(safetensors_only(path, "text/openclip"))
        self.model, self.tokenizer = parts.model, parts.tokenizer
        self.dim = parts.embed_dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))), dim=-1)  # (N, E)
