"""The modality contract: one registration says what a kind of signal is and how the toolkit treats it.

A modality names its raw layout (what a dataset of it holds), how one file of it is read, its default
dataset, encoder, template and pretraining corpus, and its colour and marker in every figure. The config's
`modalities.<name>` entries start from these defaults; nothing else in the package lists modalities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..registry import MODALITIES


@dataclass(frozen=True, eq=False)
class Modality:
    """One kind of signal: its layout, file reader, defaults and look."""

    name: str
    ndim: int  # dimensions of a dataset's x, samples first: image (N, H, W) has 3
    layout: str  # the layout in words, for error messages and docs
    data: str  # default dataset (a registered name, or "<reader>:<path>")
    encoder: str  # default frozen encoder ("name" or "name@weights")
    template: str  # default text template; "{}" is the class name
    corpus: str  # default pretraining-corpus dataset
    extensions: tuple[str, ...]  # file suffixes a folder dataset reads for this modality
    read: Callable[[Path], np.ndarray]  # one file -> one sample in the layout (its ndim - 1 dimensions)
    colour: str  # hex colour in every figure
    marker: str  # plotly marker symbol in every figure
    sample_rate: int = 0  # audio-like modalities: the rate `read` returns
    # One decoded file sample -> the shape an encoder of input size `size` batches (images and depth maps come
    # in their own sizes); None: `read` already returns one shape for every file.
    conform: Callable[[np.ndarray, int], np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"Modality({self.name!r}, {self.layout})"


def register_modality(modality: Modality) -> Modality:
    """Add a modality to the registry (its file calls this once)."""
    return MODALITIES.register(modality.name)(modality)


def get_modality(name: str) -> Modality:
    """The registered modality called name, or a KeyError listing the registered ones."""
    return MODALITIES.get(name)


TEXT_COLOUR, TEXT_MARKER = "#7F7F7F", "x"  # class texts, and any name that is not a registered modality


def colour(name: str) -> str:
    """The fixed colour of a modality in every figure (grey for text or an unknown name)."""
    return MODALITIES.get(name).colour if name in MODALITIES else TEXT_COLOUR


def marker(name: str) -> str:
    """The fixed marker of a modality in every figure."""
    return MODALITIES.get(name).marker if name in MODALITIES else TEXT_MARKER
