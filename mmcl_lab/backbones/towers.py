"""A real aligned model as the backbone (`model.backbone=towers`): the modalities' own towers (CLIP, CLAP, a binding
model) and their own text towers, with no bundled head and no pretraining.

Each stream modality's encoder must be a real model's Tower. Its features are cached `model.prompt_depth` layers
below its top; the embedding model holds the layers above (one top per feature space: CLIP's last ViT layers with
VPT-deep prompts, CLAP's last Swin blocks with prefix prompts), the final norm and the projection, so methods
fine-tune or prompt the real model itself, and zero-shot measures it. Class texts go through the text tower each
modality's checkpoint holds (encoders.text for one that holds none); the logits use the first modality's logit
scale. ZSCL's reference data is the generated corpus encoded by the same towers, built when a method first asks.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, RunConfig
from ..encoders import Tower, TowerTop, create_encoder
from ..features import space_of
from ..utils import digest, tensors_digest
from .base import Backbone, CosineLogits, register_backbone, space_key


class TowerModel(CosineLogits):
    """Cached tokens of a feature space -> that space's tower top (prompts inside) -> (B, E) unit vectors, compared
    with the class texts of each modality's own text tower."""

    def __init__(self, tops: dict[str, TowerTop], class_text: Tensor, log_scale: float):
        super().__init__()
        self.tops = nn.ModuleDict({space_key(s): top for s, top in tops.items()})
        self.spaces = tuple(tops)
        self.log_scale = nn.Parameter(torch.tensor(log_scale), requires_grad=False)
        self.register_buffer("class_text", class_text.clone())  # (C, E), frozen anchors
        prompted = [t for t in tops.values() if t.layers]
        self._layers = min((t.layers for t in tops.values()), default=0)
        widths = sorted({t.width for t in prompted})
        if self._layers and len(widths) > 1:
            raise ConfigError(f"model.prompt_depth={self._layers}: prompts are shared across towers, but their widths "
                              f"differ ({widths}); use towers of one width or model.prompt_depth=0")
        self._width = widths[0] if widths else 0

    @property
    def prompt_layers(self) -> int:
        """Layers with a prompt hook: the fewest any tower top has."""
        return self._layers

    @property
    def prompt_width(self) -> int:
        """Width of a prompt token: the towers' hidden size."""
        return self._width

    def embed(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) cached tokens [+ prompts (D, L, W) or (B, D, L, W) for the first D top layers] -> (B, E)."""
        key = space_key(space)
        if key not in self.tops:
            raise KeyError(f"feature space {space!r} is unknown to this model (has {list(self.spaces)})")
        if prompts is not None:
            prompts = prompts.expand(x.shape[0], -1, -1, -1) if prompts.ndim == 3 else prompts  # (B, D, L, W)
            if prompts.shape[1] > self._layers or prompts.shape[-1] != self._width:
                raise ValueError(f"prompts must be (B, <={self._layers}, L, {self._width}), got {tuple(prompts.shape)}")
        return F.normalize(self.tops[key](x, prompts), dim=-1)

    def forward(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """embed(), for torch.func and DDP."""
        return self.embed(x, space, prompts)


class TowersBackbone(Backbone):
    """The real towers above their cut, their text towers, and (lazily) the corpus they encode for ZSCL."""

    def __init__(self, cfg: RunConfig, tops: dict[str, TowerTop], text_towers: dict[str, nn.Module],
                 log_scale: float, key: str, seconds: float, device: torch.device, progress: bool):
        self.cfg, self.tops, self.text_towers, self.log_scale = cfg, tops, text_towers, log_scale
        self.key, self.seconds, self._device, self._progress = key, seconds, device, progress

    @functools.cached_property
    def reference(self):
        """The generated corpus through the same towers and text towers (built, and cached, on first use)."""
        from .binding import build_corpus

        return build_corpus(self.cfg, None, self._device, self._progress, text_towers=self.text_towers)

    def encode_text(self, texts: Sequence[str], modality: str | None = None) -> Tensor:
        tower = self.text_towers[modality or next(iter(self.text_towers))]
        return tower.encode(list(texts)).float()

    def model(self, stream, pretrained: bool = True) -> TowerModel:
        modality = list(stream.class_modality)
        rows = {m: [i for i, cm in enumerate(modality) if cm == m] for m in dict.fromkeys(modality)}
        encoded = {m: self.encode_text([stream.class_prompts[i] for i in r], m) for m, r in rows.items()}
        text = torch.empty(len(modality), next(iter(encoded.values())).shape[1])  # (C, E), classes in stream order
        for m, r in rows.items():
            text[r] = encoded[m]
        model = TowerModel(copy.deepcopy(self.tops), text, self.log_scale)
        if not pretrained:  # the chance row: the same architecture, re-initialised from the global RNG
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return model

    def checksum(self) -> str:
        return tensors_digest({f"{s}.{k}": v for s, top in self.tops.items() for k, v in top.state_dict().items()})[:16]

    def describe(self) -> str:
        specs = ", ".join(f"{m}: {self.cfg.modalities[m].encoder}" for m in self.cfg.stream.modalities)
        return (f"backbone towers {self.key} (real towers, {self.cfg.model.prompt_depth} top layers prompted; loaded "
                f"in {self.seconds:.1f} s; weights {self.checksum()}): {specs}")


@register_backbone("towers")
def towers_backbone(cfg: RunConfig, spaces: dict[str, tuple[int, int]], device: torch.device,
                    progress: bool = True) -> TowersBackbone:
    """The stream modalities' real towers as the backbone: their tops above model.prompt_depth, their text towers."""
    start, tops, text_towers, scales = time.perf_counter(), {}, {}, []
    for m in cfg.stream.modalities:
        spec = cfg.modalities[m].encoder
        encoder = create_encoder(spec, cfg.model.prompt_depth)
        if not isinstance(encoder, Tower):
            raise ConfigError(f"model.backbone=towers: modalities.{m}.encoder={spec!r} is not a real model's tower "
                              "(image/clip, audio/clap, <modality>/binding, ...); use model.backbone=binding for it")
        top = encoder.top()
        tops.setdefault(space_of(encoder, cfg.model.shared_tower), top)
        text_towers[m] = encoder.text_tower() or create_encoder(cfg.encoders.text)
        scales.append(top.log_scale)
    key = digest([[cfg.modalities[m].encoder for m in cfg.stream.modalities], cfg.model.prompt_depth,
                  cfg.model.shared_tower, cfg.encoders.text], 20)
    return TowersBackbone(cfg, tops, text_towers, scales[0], key, time.perf_counter() - start, device, progress)
