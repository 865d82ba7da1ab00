"""The backbone contract and its factory: what methods start from, built once per run from the config.

A backbone has a text tower (class texts -> unit vectors) and makes the trainable embedding model: one tower
(input adapter) per feature space, a stack of layers with a prompt hook each, and a projection into the text
space. Methods train or prompt that model; the run builds the backbone by name (`model.backbone`) through
`build_backbone`, on the run's device, before any method exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..registry import BACKBONES

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


def build_backbone(cfg: RunConfig, stream, device: torch.device | str = "cpu",
                   progress: bool | None = None) -> Backbone:
    """The backbone cfg.model.backbone names, with towers for the stream's feature spaces, built on device."""
    progress = cfg.train.progress if progress is None else progress
    return BACKBONES.get(cfg.model.backbone)(cfg, stream.feature_spaces, torch.device(device), progress)
