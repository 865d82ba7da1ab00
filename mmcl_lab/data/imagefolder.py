"""`imagefolder:<root>`: ImageNet-style trees, train/<class>/ and val/<class>/, with val/ as the test split.

Data card
- What: any image tree in the ImageNet layout: ILSVRC-2012 (1.28 M training images, 1,000 classes, 150 GB),
  one of its subsets (ImageNet-100, Imagenette, ...), or your own.
- Layout read: <root>/train/<class>/<image> and <root>/val/<class>/<image>; or a flat <root>/val/ with the
  Kaggle release's LOC_val_solution.csv (ImageId, PredictionString whose first word is the wnid). Images keep
  their colour and size; the image modality's `conform` brings them to each encoder's input size.
- Split: val/ is the test split; validation is carved from train/.
- Classes: the train/ folders; where LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca") lies in <root> or
  beside it, a wnid's first name ("tench"), else the folder name with underscores read as spaces.
- Licence: ImageNet's terms of access allow non-commercial research and teaching only; your own trees, yours.
  Citation: O. Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge", IJCV 2015.
- Obtain: ILSVRC-2012 from image-net.org after registering, or the Kaggle "ImageNet Object Localization
  Challenge" release; `modalities.image.data=imagefolder:/data/imagenet`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from .base import RawData, register_dataset
from .files import FileSamples, check_classes, is_data, per_class_draw
from .folder import class_folders, modality_files


def synset_names(root: Path) -> dict[str, str]:
    """{wnid: its first name} from LOC_synset_mapping.txt in root or beside it; {} where there is none."""
    for path in (root / "LOC_synset_mapping.txt", root.parent / "LOC_synset_mapping.txt"):
        if path.is_file():
            names = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                wnid, _, words = line.strip().partition(" ")
                if wnid:
                    names[wnid] = words.split(",")[0].strip() or wnid
            return names
    return {}


def _flat_val(root: Path, classes: list[str]) -> list[tuple[str, str]]:
    """(relative path, class) of a flat val/ labelled by LOC_val_solution.csv."""
    for solution in (root / "LOC_val_solution.csv", root.parent / "LOC_val_solution.csv"):
        if solution.is_file():
            break
    else:
        raise FileNotFoundError(f"{root / 'val'}: neither class folders nor a LOC_val_solution.csv to label it")
    by_id = {p.stem: p for p in (root / "val").iterdir() if p.is_file() and is_data(p)}
    out = []
    with open(solution, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            wnid = (row.get("PredictionString") or "").split(" ")[0]
            if row.get("ImageId") in by_id and wnid in classes:
                out.append((by_id[row["ImageId"]].relative_to(root).as_posix(), wnid))
    return out


@register_dataset("imagefolder", "image", reads_path=True, template="a photo of a {}")
def read_imagefolder(root: Path, modality: str = "image", max_per_class: int | None = None,
                     seed: int = 0) -> RawData:
    """List root/train/<class>/ (train) and root/val/ (test)."""
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise FileNotFoundError(f"{root}: imagefolder expects train/<class>/ and val/ below it")
    train = class_folders(root / "train", "image", "imagefolder train")
    classes = list(train)
    items = [(p.relative_to(root).as_posix(), c, "train") for c, paths in train.items() for p in paths]
    if any(p.is_dir() for p in (root / "val").iterdir()):
        for c in (c for c in classes if (root / "val" / c).is_dir()):
            items += [(p.relative_to(root).as_posix(), c, "test") for p in modality_files(root / "val" / c, "image")]
    else:
        items += [(rel, c, "test") for rel, c in _flat_val(root, classes)]
    label = {c: i for i, c in enumerate(classes)}
    y = np.array([label[c] for _, c, _ in items], dtype=np.int64)
    split = np.array([part for _, _, part in items])
    keep = per_class_draw(y, max_per_class, seed, split)
    wnids = synset_names(root)
    names = tuple(wnids.get(c, c.replace("_", " ")) for c in classes)
    if len(set(names)) < len(names):  # ImageNet has two "crane"s and two "maillot"s: the wnid tells them apart
        names = tuple(f"{n} ({c})" if names.count(n) > 1 else n for n, c in zip(names, classes))
    check_classes(f"imagefolder:{root}", y[keep], names, MIN_PER_CLASS, split[keep])
    files = [items[i][0] for i in keep]
    return RawData(f"imagefolder:{root.name}", "image", FileSamples(root, files, "image"), y[keep], names,
                   sources=np.array(files), split=split[keep])
