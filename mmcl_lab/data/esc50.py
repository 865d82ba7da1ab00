"""`esc50:<root>`: ESC-50, environmental sounds in the official repository's layout, with its five folds.

Data card
- What: 2,000 five-second clips, 44.1 kHz mono, 50 classes of 40 clips (animals, nature, human, domestic,
  urban noises), from freesound.org. 600 MB.
- Layout read: <root>/audio/<fold>-<clip id>-<take>-<target>.wav and <root>/meta/esc50.csv with the columns
  filename, fold, target, category (read by name: their order does not matter; esc10, src_file and take are
  ignored).
- Split: the official folds. `?fold=K` (1-5, default 1) is the test split, the other four folds train; the clips
  of one source recording share a fold, so none straddles the split.
- Classes: `category` as published, underscores read as spaces ("chirping_birds" -> "chirping birds"), in
  `target` order.
- Licence: CC BY-NC 3.0 (non-commercial). Citation: K. J. Piczak, "ESC: Dataset for Environmental Sound
  Classification", ACM Multimedia 2015.
- Obtain: clone or download the ESC-50 repository by Karol Piczak (karolpiczak/ESC-50 on GitHub) and pass the
  folder holding audio/ and meta/: `modalities.audio.data=esc50:/data/ESC-50-master`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from ..registry import MODALITIES
from .base import RawData, register_dataset
from .files import FileSamples, check_classes, per_class_draw

COLUMNS = ("filename", "fold", "target", "category")


@register_dataset("esc50", "audio", reads_path=True, template="the sound of {}")
def read_esc50(root: Path, modality: str = "audio", max_per_class: int | None = None, seed: int = 0,
               fold: str = "1") -> RawData:
    """List ESC-50 under root; fold K is the test split."""
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found (esc50: expects the repository layout, <root>/meta/esc50.csv "
                                "and <root>/audio/)")
    if fold not in {"1", "2", "3", "4", "5"}:
        raise ValueError(f"esc50:{root}?fold={fold}: the fold must be 1 to 5")
    with open(meta, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{meta}: columns {missing} missing (found {reader.fieldnames})")
        rows = list(reader)
    names: dict[int, str] = {}
    for line, row in enumerate(rows, start=2):
        target, category = int(row["target"]), row["category"].strip()
        if names.setdefault(target, category) != category:
            raise ValueError(f"{meta}:{line}: target {target} is {names[target]!r} above but {category!r} here")
        if not (root / "audio" / row["filename"]).is_file():
            raise FileNotFoundError(f"{meta}:{line}: {root / 'audio' / row['filename']} is listed but missing")
    order = sorted(names)  # classes in target order, relabelled 0..C-1
    local = {t: i for i, t in enumerate(order)}
    y = np.array([local[int(r["target"])] for r in rows], dtype=np.int64)
    split = np.array(["test" if r["fold"].strip() == fold else "train" for r in rows])
    keep = per_class_draw(y, max_per_class, seed, split)
    class_names = tuple(names[t].replace("_", " ") for t in order)
    check_classes(f"esc50:{root}", y[keep], class_names, MIN_PER_CLASS, split[keep])
    files = [f"audio/{rows[i]['filename']}" for i in keep]
    return RawData(f"esc50:{root.name}", "audio", FileSamples(root, files, "audio"), y[keep], class_names,
                   MODALITIES.get("audio").sample_rate, sources=np.array(files), split=split[keep])
