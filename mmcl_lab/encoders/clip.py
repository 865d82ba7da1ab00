"""CLIP (transformers) as a real aligned model: its vision tower for images, depth maps and video frames, its own
text tower for the class texts, and the checkpoint's own image processor and tokenizer.

A directory holds either a whole CLIPModel (both towers and the logit scale) or one tower with its projection
(CLIPVisionModelWithProjection or CLIPTextModelWithProjection), as ImageBind- and LanguageBind-style checkpoints
ship theirs: `binding@towers.yaml` names such towers per modality (BindingTowers). Embeddings come out in the
projected, text-aligned space. Licences are the checkpoints' own: OpenAI's CLIP weights are MIT, LanguageBind's
are MIT, ImageBind's are CC-BY-NC 4.0; `license` says what the checkpoint's config records, if anything.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from .base import TextEncoder, register_encoder, safetensors_only, split_layers
from .vit import AudioInput, DepthInput, ImageInput, VideoInput, VisionTower, ViTTop, as_rgb

DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained value (the clamp it reached); for towers saved without a scale


@functools.lru_cache(maxsize=8)
def load_clip(path: str) -> SimpleNamespace:
    """The parts of the CLIP checkpoint at path, loaded once per process (several modalities share one model):
    vision and/or text transformer, their projections, and the log logit scale (None when not saved)."""
    from transformers import AutoConfig, CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from transformers.utils import logging

    logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(safetensors_only(path, "clip"))
    kind, licence = config.model_type, getattr(config, "license", None) or "the checkpoint's own (see its model card)"
    out = SimpleNamespace(vision=None, visual_projection=None, text=None, text_projection=None, log_scale=None,
                          license=licence)
    if kind == "clip":
        m = CLIPModel.from_pretrained(path, use_safetensors=True)
        out.vision, out.visual_projection = m.vision_model, m.visual_projection
        out.text, out.text_projection, out.log_scale = m.text_model, m.text_projection, m.logit_scale.item()
    elif kind == "clip_vision_model":
        m = CLIPVisionModelWithProjection.from_pretrained(path, use_safetensors=True)
        out.vision, out.visual_projection = m.vision_model, m.visual_projection
    elif kind == "clip_text_model":
        m = CLIPTextModelWithProjection.from_pretrained(path, use_safetensors=True)
        out.text, out.text_projection = m.text_model, m.text_projection
    else:
        raise ValueError(f"{path}: a {kind!r} checkpoint; expected a CLIP model or one CLIP tower with projection")
    m.eval().requires_grad_(False)
    return out


class ClassTokenHead(nn.Module):
    """CLIP's head on a vision transformer's last hidden states: post_layernorm on the class token, then the visual
    projection: (N, 1 + P, hidden) -> (N, E)."""

    def __init__(self, post_layernorm: nn.Module, projection: nn.Module):
        super().__init__()
        self.post_layernorm, self.projection = post_layernorm, projection

    def forward(self, h: Tensor) -> Tensor:
        return self.projection(self.post_layernorm(h[:, 0]))


class CLIPVisionTower(VisionTower):
    """A CLIP vision tower, cut `depth` layers below its top: (B, 3, S, S) pixels from the checkpoint's image
    processor -> (B, 1 + P, hidden) hidden states at the cut, or (B, 1, E) projected embeddings at depth 0."""

    source = "transformers CLIP vision tower + the checkpoint's image processor"

    def __init__(self, path: str = "", depth: int = 0, text_path: str | None = None, log_scale: float | None = None):
        super().__init__()
        from transformers import AutoImageProcessor

        parts = load_clip(safetensors_only(path, f"{self.modality}/clip"))
        if parts.vision is None:
            raise ValueError(f"{path}: holds no vision tower (a text tower only)")
        self.vision, self.projection, self.path = parts.vision, parts.visual_projection, path
        self.head = ClassTokenHead(self.vision.post_layernorm, self.projection)
        self._text_path = path if text_path is None and parts.text is not None else text_path
        self.log_scale = parts.log_scale if log_scale is None else log_scale
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.depth = depth
        self.cut = split_layers(self.vision.encoder.layers, depth, f"the CLIP vision tower at {path}")
        cfg = self.vision.config
        self.tokens_per_image = 1 + (cfg.image_size // cfg.patch_size) ** 2
        self.dim = cfg.hidden_size if depth else self.projection.out_features
        crop = self.processor.crop_size
        self.input_size = crop["height"] if isinstance(crop, dict) else getattr(crop, "height", cfg.image_size)
        self.license = parts.license
        self.feature_space = f"{self.modality}/clip:{path}"

    def _pixels(self, images: np.ndarray) -> Tensor:
        return self.processor(images=list(as_rgb(images)), return_tensors="pt")["pixel_values"]

    def _run(self, pixels: Tensor) -> Tensor:
        h = self.vision.pre_layrnorm(self.vision.embeddings(pixels))
        for layer in self.vision.encoder.layers[: self.cut]:
            h = layer(h, None)
        return h if self.depth else self.head(h)

    def top(self) -> ViTTop:
        return ViTTop(list(self.vision.encoder.layers[self.cut:]), self.head, self.vision.config.hidden_size,
                      self.log_scale if self.log_scale is not None else math.log(DEFAULT_LOGIT_SCALE))

    def text_tower(self) -> TextEncoder | None:
        return CLIPText(self._text_path) if self._text_path else None

    def cache_key(self) -> str:  # the processor's settings are part of what the features depend on
        return f"{super().cache_key()}|{self.processor.to_json_string()}"


@register_encoder("image/clip")
class ImageCLIP(ImageInput, CLIPVisionTower):
    """CLIP's vision tower on grey or colour images."""


@register_encoder("depth/clip")
class DepthCLIP(DepthInput, CLIPVisionTower):
    """CLIP's vision tower on depth maps rendered as grey images."""


@register_encoder("audio/clip")
class AudioCLIP(AudioInput, CLIPVisionTower):
    """CLIP's vision tower on log-mel spectrograms drawn as grey images."""


@register_encoder("video/clip")
class VideoCLIP(VideoInput, CLIPVisionTower):
    """CLIP's vision tower frame by frame; the top averages the frames' embeddings."""


@register_encoder("text/clip")
class CLIPText(TextEncoder):
    """CLIP's text tower with the checkpoint's tokenizer: projected, L2-normalised embeddings (N, E)."""

    source = "transformers CLIP text tower + the checkpoint's tokenizer"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import AutoTokenizer

        parts = load_clip(safetensors_only(path, "text/clip"))
        if parts.text is None:
            raise ValueError(f"{path}: holds no text tower (a vision tower only)")
        self.text, self.projection = parts.text, parts.text_projection
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim, self.license = self.projection.out_features, parts.license

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        pooled = self.text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        return F.normalize(self.projection(pooled), dim=-1)  # (N, E)


# ---- binding models: one CLIP-architecture tower per modality, named by a small file ----------------------------


@functools.lru_cache(maxsize=8)
def read_towers_file(path: str) -> dict:
    """towers.yaml: {text: DIR, towers: {modality: DIR}, logit_scale: FLOAT (optional)}, paths relative to the file;
    errors name the file and the key."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{file}: no such towers file (expected YAML with 'text' and 'towers')")
    spec = yaml.safe_load(file.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("towers"), dict) or not spec.get("text"):
        raise ValueError(f"{file}: expected keys 'text' (a directory) and 'towers' (modality: directory)")
    unknown = sorted(set(spec) - {"text", "towers", "logit_scale"})
    if unknown:
        raise ValueError(f"{file}: unknown keys {unknown}; expected text, towers, logit_scale")
    where = lambda p: str((file.parent / str(p)).expanduser())  # noqa: E731
    scale = float(spec.get("logit_scale", DEFAULT_LOGIT_SCALE))
    if not scale > 0:
        raise ValueError(f"{file}: logit_scale={scale}; expected a positive number")
    return {"text": where(spec["text"]), "towers": {m: where(p) for m, p in spec["towers"].items()},
            "log_scale": math.log(scale)}


class BindingTowers(CLIPVisionTower):
    """One modality's tower of a binding model (ImageBind- or LanguageBind-style: a CLIP-architecture tower with
    projection per modality, bound to one text tower), from `<modality>/binding@towers.yaml`."""

    source = "a binding model's CLIP-architecture tower (towers.yaml) + its image processor"

    def __init__(self, path: str = "", depth: int = 0):
        spec = read_towers_file(safetensors_only(path, f"{self.modality}/binding"))
        if self.modality not in spec["towers"]:
            raise ValueError(f"{path}: 'towers' has no {self.modality!r} entry (has {sorted(spec['towers'])})")
        super().__init__(spec["towers"][self.modality], depth, spec["text"], spec["log_scale"])
        self.feature_space = f"{self.modality}/binding:{spec['towers'][self.modality]}"


@register_encoder("image/binding")
class ImageBinding(BindingTowers, ImageCLIP):
    """A binding model's image tower."""


@register_encoder("depth/binding")
class DepthBinding(BindingTowers, DepthCLIP):
    """A binding model's depth tower (depth maps as grey images, as LanguageBind's depth tower takes them)."""


@register_encoder("audio/binding")
class AudioBinding(BindingTowers, AudioCLIP):
    """A binding model's audio tower on log-mel images."""


@register_encoder("video/binding")
class VideoBinding(BindingTowers, VideoCLIP):
    """A binding model's video tower, frame by frame."""


@register_encoder("text/binding")
class BindingText(CLIPText):
    """A binding model's text tower, from towers.yaml."""

    def __init__(self, path: str = ""):
        super().__init__(read_towers_file(safetensors_only(path, "text/binding"))["text"])
