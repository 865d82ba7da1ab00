"""Bring your own data: `folder:<root>` reads root/<class name>/<file> for any registered modality.

Each modality's file says which suffixes it reads and how one file becomes one sample (modalities/): images
as grey 64 x 64, audio as mono 22,050 Hz (first 5 s), video as 8 grey frames, depth as 2-D .npy metres.
Hidden files and OS metadata (`._name.wav`, `.DS_Store`, `__MACOSX/`) are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from ..registry import MODALITIES
from .base import RawData, register_dataset

# What operating systems and archivers leave beside real files: never data.
OS_METADATA = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir"}


def _is_data(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in OS_METADATA


def _read_sample(path: Path, modality) -> np.ndarray:
    """One file as its modality's array; every failure names the file."""
    try:
        x = modality.read(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read as {modality.name} ({type(err).__name__}: {err})") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{path}: {modality.name} sample holds NaN or infinite values")
    return x


@register_dataset("folder", modality=None, reads_path=True)
def read_folder(root: Path, modality: str, max_per_class: int | None = None) -> RawData:
    """Read root/<class>/<file>; every unreadable file, empty class or bad name is an error naming it."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES.names())}")
    kind = MODALITIES.get(modality)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder dataset root does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _is_data(p))
    if not class_dirs:
        raise ValueError(f"{root}: no class folders (expected {root}/<class name>/<file>)")
    listing = {}
    for folder in class_dirs:  # every class is checked before any file is decoded
        if not folder.name.strip():
            raise ValueError(f"{folder}: a class folder needs a non-blank name")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in kind.extensions and _is_data(p))
        if len(files) < MIN_PER_CLASS:
            raise ValueError(f"{folder}: class {folder.name!r} has {len(files)} {modality} files "
                             f"({', '.join(sorted(kind.extensions))}); it needs at least {MIN_PER_CLASS} "
                             "(a train, a validation and a test sample)")
        listing[folder] = files[:max_per_class]
    xs, ys = [], []
    for label, files in enumerate(listing.values()):
        xs += [_read_sample(path, kind) for path in files]
        ys += [label] * len(files)
    names = tuple(d.name.replace("_", " ") for d in class_dirs)
    for name in set(names):  # `rain_drops` and `rain drops` would both be "rain drops"
        clash = [str(d) for d, n in zip(class_dirs, names) if n == name]
        if len(clash) > 1:
            raise ValueError(f"{clash[0]} and {clash[1]}: both name the class {name!r} (underscores read as spaces); "
                             "rename one")
    return RawData(f"folder:{root.name}", modality, np.stack(xs), np.array(ys, dtype=np.int64), names,
                   kind.sample_rate)
