"""The backbone contract and its factory: what methods start from, built once per run from the config.

A backbone has a text tower (class texts -> unit vectors) and makes the trainable embedding model: one tower
(input adapter) per feature space, a stack of layers with a prompt hook each, and a projection into the text
space. Methods train or prompt that model; the run builds the backbone by name (`model.backbone`) through
`build_backbone`, on the run's device, before any method exists.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..registry import BACKBONES
from ..timing import phase

register_backbone = BACKBONES.register


class EmbeddingModel(Protocol):
    """The trainable model a backbone makes: what methods train, prompt, evaluate and probe."""

    class_text: Tensor  # (C, E) frozen text embeddings of the stream's classes
    prompt_layers: int  # layers with a prompt hook (prefix tokens), counted from the first
    prompt_width: int  # width of one prompt token

    def embed(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) features of one feature space [+ prompts (D, L, W) or (B, D, L, W)] -> (B, E) unit vectors."""

    def logits(self, z: Tensor, classes: Tensor | list[int] | None = None) -> Tensor:
        """(B, E) embeddings -> (B, C) scaled cosine similarities to the class texts."""

    @property
    def temperature(self) -> float:
        """The temperature the cosine logits are divided by."""


class Backbone(ABC):
    """What the factory builds for a run: a text tower, the weights every method starts from, and the
    embedding model made from them."""

    key: str  # identity of the weights: the same key always gives the same weights
    seconds: float  # time spent building (0.0 when read from the cache)
    reference: Any  # the data it was pretrained on, for methods that distil on it (ZSCL); None if unknown

    @abstractmethod
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """(N,) strings -> (N, E) unit vectors from the backbone's text tower."""

    @abstractmethod
    def model(self, stream, pretrained: bool = True) -> nn.Module:
        """A fresh embedding model (EmbeddingModel) for the stream's feature spaces and class texts, with the
        backbone's weights (pretrained=False: a random initialisation from the global RNG, the `chance` row)."""

    @abstractmethod
    def checksum(self) -> str:
        """A short hash of the weights a pretrained model starts from."""

    def fingerprints(self) -> dict:
        """Checksums of what the backbone is made of: its weights (a pretrained one adds its corpus's)."""
        return {"weights": self.checksum()}

    def describe(self) -> str:
        """One line for reports: what this backbone is and where its weights came from."""
        how = f"built in {self.seconds:.1f} s" if self.seconds else "read from the cache"
        return f"backbone {type(self).__name__} {self.key} ({how}; weights {self.checksum()})"


def space_key(space: str) -> str:
    """A ModuleDict key for a feature space (spaces can be paths, and keys may not contain "."): a stable hash."""
    return f"space_{zlib.crc32(space.encode()):08x}"


class CosineLogits(nn.Module):
    """Cosine logits against frozen class texts over a temperature: the head every embedding model shares
    (needs `class_text` (C, E) and `log_scale`, log 1 / temperature)."""

    class_text: Tensor
    log_scale: nn.Parameter

    @property
    def temperature(self) -> float:
        """The temperature cosine logits are divided by."""
        return float(1.0 / self.log_scale.detach().exp().clamp(max=100.0))

    def logits(self, z: Tensor, classes: Tensor | list[int] | None = None) -> Tensor:
        """Cosine similarity to class texts over a temperature: (B, E) -> (B, C)."""
        text = self.class_text if classes is None else self.class_text[classes]
        return z @ text.T * self.log_scale.exp().clamp(max=100.0)  # (B, E) @ (E, C) -> (B, C)


def build_backbone(cfg: RunConfig, stream, device: torch.device | str = "cpu",
                   progress: bool | None = None) -> Backbone:
    """The backbone cfg.model.backbone names, with towers for the stream's feature spaces, built on device."""
    progress = cfg.train.progress if progress is None else progress
    # One phase: pretraining or reading the weights, and the text anchors. The corpus's data and features are phases
    # of their own.
    with phase(f"backbone: {cfg.model.backbone}"):
        return BACKBONES.get(cfg.model.backbone)(cfg, stream.feature_spaces, torch.device(device), progress)
