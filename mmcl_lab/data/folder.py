"""Bring your own data: `folder:<root>` lists root/<class name>/<file> for any registered modality.

Each modality's file says which suffixes it reads and how one file becomes one sample (modalities/): images
in their own colour and size (the modality's `conform` brings them to each encoder's input size), audio as
mono 22,050 Hz (first 5 s), video as 8 grey frames, depth as 2-D .npy metres. Files are decoded only when
their features are extracted. There is no official split here: the stream draws a seeded one. The standard
releases have their own readers: `esc50:`, `ucf101:`, `nyu_depth_v2:`, `sun_rgbd:`, `imagefolder:` (docs/DATASETS.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from ..registry import MODALITIES
from .base import RawData, register_dataset
from .files import FileSamples, check_classes, is_data, per_class_draw


def modality_files(folder: Path, modality: str) -> list[Path]:
    """The files of modality (by suffix) in folder, sorted, without hidden files or OS metadata."""
    extensions = MODALITIES.get(modality).extensions
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions and is_data(p))


def class_folders(root: Path, modality: str, what: str = "folder dataset") -> dict[str, list[Path]]:
    """{class folder name: its files of modality, sorted} under root; every empty class or bad name is an error
    naming it (checked before anything is decoded)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES.names())}")
    kind = MODALITIES.get(modality)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {what} root does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and is_data(p))
    if not class_dirs:
        raise ValueError(f"{root}: no class folders (expected {root}/<class name>/<file>)")
    listing = {}
    for folder in class_dirs:
        if not folder.name.strip():
            raise ValueError(f"{folder}: a class folder needs a non-blank name")
        files = modality_files(folder, modality)
        if len(files) < MIN_PER_CLASS:
            raise ValueError(f"{folder}: class {folder.name!r} has {len(files)} {modality} files "
                             f"({', '.join(sorted(kind.extensions))}); it needs at least {MIN_PER_CLASS} "
                             "(a train, a validation and a test sample)")
        listing[folder.name] = files
    return listing


def readable_names(folders: list[str], root: Path) -> tuple[str, ...]:
    """Class folder names as class names (underscores read as spaces); two folders naming one class are an error."""
    names = tuple(d.replace("_", " ") for d in folders)
    for name in set(names):  # `rain_drops` and `rain drops` would both be "rain drops"
        clash = [str(root / d) for d, n in zip(folders, names) if n == name]
        if len(clash) > 1:
            raise ValueError(f"{clash[0]} and {clash[1]}: both name the class {name!r} (underscores read as spaces); "
                             "rename one")
    return names


@register_dataset("folder", modality=None, reads_path=True)
def read_folder(root: Path, modality: str, max_per_class: int | None = None, seed: int = 0) -> RawData:
    """List root/<class>/<file>: at most max_per_class files per class, a draw seeded by seed."""
    root = Path(root).expanduser()
    listing = class_folders(root, modality)
    names = readable_names(list(listing), root)
    files = [p.relative_to(root).as_posix() for paths in listing.values() for p in paths]
    y = np.concatenate([np.full(len(paths), c, dtype=np.int64) for c, paths in enumerate(listing.values())])
    keep = per_class_draw(y, max_per_class, seed)
    check_classes(f"folder:{root}", y[keep], names, MIN_PER_CLASS)
    samples = FileSamples(root, [files[i] for i in keep], modality)
    return RawData(f"folder:{root.name}", modality, samples, y[keep], names, MODALITIES.get(modality).sample_rate)
