"""Datasets read where they lie, decoded one sample at a time: the lazy half of the data layer.

A reader (`folder:`, `esc50:`, `ucf101:`, ...) only lists its samples -- a relative path (or a row of one file),
a label and the release's split -- and never decodes them. Decoding happens per sample, in the DataLoader workers
of feature extraction (features.py). The manifest (relative path, size and modification time of every file) is
the feature cache's key, so a warm run decodes nothing, and each run saves it (manifest.csv) so that it is known
which file was in which split.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import MIN_PER_CLASS
from ..registry import MODALITIES
from ..utils import digest

# What operating systems and archivers leave beside real files: never data.
OS_METADATA = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir"}


def is_data(path: Path) -> bool:
    """False for hidden files and OS metadata (`._name.wav`, `.DS_Store`, `__MACOSX/`)."""
    return not path.name.startswith(".") and path.name not in OS_METADATA and "__MACOSX" not in path.parts


class LazySamples(torch.utils.data.Dataset):
    """Samples of one modality that are decoded only when indexed; subclasses list them and decode one."""

    modality: str = ""
    ids: tuple[str, ...] = ()  # one stable identifier per sample: its path relative to the root, or file#row

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        """Sample i decoded in its modality's layout, in its own size (the modality's `conform` brings it to an
        encoder's input size)."""
        raise NotImplementedError

    def manifest(self) -> list[tuple[str, int, int]]:
        """(id, size in bytes, modification time in ns) of every sample's file: what the cache key hashes."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of the manifest: changes when any file is added, removed, resized or touched."""
        return digest([type(self).__name__, self.modality, self.manifest()], 20)

    def take(self, rows: Sequence[int]) -> np.ndarray:
        """Several samples decoded and stacked (they must share a shape)."""
        return np.stack([self[int(i)] for i in rows])


def decode_file(path: Path, modality: str, read: Callable[[Path], np.ndarray] | None = None) -> np.ndarray:
    """One file as its modality's array, by read (default: the modality's reader); every failure names the file.
    The one place a reader's files are decoded."""
    try:
        x = (read or MODALITIES.get(modality).read)(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read as {modality} ({type(err).__name__}: {err})") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{path}: {modality} sample holds NaN or infinite values")
    return x


class FileSamples(LazySamples):
    """One file per sample under root, decoded when indexed by read (a module-level function, so that DataLoader
    workers can receive it; default: the modality's reader)."""

    def __init__(self, root: Path, files: Sequence[str], modality: str,
                 read: Callable[[Path], np.ndarray] | None = None):
        self.root, self.ids, self.modality, self.read = Path(root), tuple(files), modality, read

    def __getitem__(self, i: int) -> np.ndarray:
        return decode_file(self.root / self.ids[i], self.modality, self.read)

    def at_rate(self, rate: int) -> FileSamples:
        """The same files decoded at rate (audio-like modalities, whose reader takes a rate)."""
        return FileSamples(self.root, self.ids, self.modality,
                           functools.partial(self.read or MODALITIES.get(self.modality).read, rate=rate))

    def manifest(self) -> list[tuple[str, int, int]]:
        out = []
        for rel in self.ids:
            st = os.stat(self.root / rel)
            out.append((rel, st.st_size, st.st_mtime_ns))
        return out


def per_class_draw(y: np.ndarray, max_per_class: int | None, seed: int, split: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows keeping at most max_per_class samples of each class, drawn with seed (not the first N in
    file order, which would pick one recording session or one actor). Under an official split, each class keeps
    its train and test parts in proportion (at least one of each)."""
    if not max_per_class:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    parts = np.zeros(len(y), dtype=np.int64) if split is None else (split == "test").astype(np.int64)
    keep = []
    for c in np.unique(y):
        mine = y == c
        n = min(max_per_class, int(mine.sum()))
        for part in np.unique(parts[mine]):
            rows = np.flatnonzero(mine & (parts == part))
            share = max(1, round(n * len(rows) / mine.sum()))
            keep.append(rng.permutation(rows)[:share])
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def check_classes(where: str, y: np.ndarray, names: Sequence[str], minimum: int, split: np.ndarray | None = None):
    """Every class has at least minimum samples, and, under an official split, some in train and in test."""
    for c, name in enumerate(names):
        n = int(np.sum(y == c))
        if n < minimum:
            raise ValueError(f"{where}: class {name!r} has {n} samples; it needs at least {minimum} "
                             "(a train, a validation and a test sample)")
        if split is not None:
            for part, need in (("train", 2), ("test", 1)):
                got = int(np.sum((y == c) & (split == part)))
                if got < need:
                    raise ValueError(f"{where}: class {name!r} has {got} {part} samples in the official split; "
                                     f"it needs at least {need}")


def too_few(labels: np.ndarray, minimum: int, split: np.ndarray | None = None) -> list[str]:
    """The label values with fewer than minimum samples, or, under an official split, without two train samples
    and a test sample: classes a release holds but a stream cannot split."""
    rare = []
    for label in sorted(set(labels.tolist())):
        mine = labels == label
        enough = mine.sum() >= minimum
        if split is not None:
            enough = enough and np.sum(mine & (split == "train")) >= 2 and np.sum(mine & (split == "test")) >= 1
        if not enough:
            rare.append(label)
    return rare


def labelled_rows(where: str, labels: Sequence[str], min_per_class: int, split: np.ndarray | None,
                  max_per_class: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...],
                                                             np.ndarray | None]:
    """The rows of a release labelled by name (scene types, say) that a stream can use: labels too rare to split
    left out with a warning naming them, then a seeded per-class draw. Returns (rows, labels into the sorted
    class names, class names with underscores read as spaces, those rows' official split or None)."""
    labels = np.asarray(labels)
    rare = too_few(labels, min_per_class, split)
    if rare:
        warnings.warn(f"{where}: classes left out (too few samples for a train, validation and test part): "
                      f"{', '.join(rare)}", stacklevel=3)
    names = sorted(set(labels.tolist()) - set(rare))
    rows = np.flatnonzero(np.isin(labels, names))
    y = np.searchsorted(names, labels[rows]).astype(np.int64)
    keep = per_class_draw(y, max_per_class, seed, None if split is None else split[rows])
    rows, y = rows[keep], y[keep]
    class_names = tuple(n.replace("_", " ") for n in names)
    part = None if split is None else split[rows]
    check_classes(where, y, class_names, MIN_PER_CLASS, part)
    return rows, y, class_names, part
