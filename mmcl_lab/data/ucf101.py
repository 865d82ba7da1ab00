"""`ucf101:<root>`: UCF-101 action videos in the official layout, with its train/test lists.

Data card
- What: 13,320 clips (.avi, 320x240, 25 fps) of 101 human actions from YouTube, 25 groups per class (a group is
  one actor and scene, 4-7 clips each). 6.5 GB.
- Layout read: <root>/<Class>/v_<Class>_gNN_cMM.avi, and ucfTrainTestlist/ (classInd.txt, trainlist0K.txt,
  testlist0K.txt) in <root> or beside it, as the two official archives unpack. Lines may end in CRLF.
- Split: the official one, `?split=K` (1-3, default 1): trainlist0K trains, testlist0K tests. Its groups never
  straddle it; validation is carved from the train list by whole groups too (the gNN of each name).
- Classes: classInd.txt's names in its order, CamelCase read as words for the text ("ApplyEyeMakeup" ->
  "apply eye makeup").
- Licence: no licence is stated; the authors ask for the citation. Citation: K. Soomro, A. R. Zamir, M. Shah,
  "UCF101: A Dataset of 101 Human Actions Classes From Videos in The Wild", CRCV-TR-12-01, 2012.
- Obtain: UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from the CRCV site of the University of
  Central Florida; `modalities.video.data=ucf101:/data/UCF-101`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from .base import RawData, register_dataset
from .files import FileSamples, check_classes, per_class_draw

NAME = re.compile(r"v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$", re.IGNORECASE)


def words(camel: str) -> str:
    """"ApplyEyeMakeup" -> "apply eye makeup"; "YoYo" -> "yo yo"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", camel).replace("_", " ").lower()


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _lists(root: Path) -> Path:
    for where in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist"):
        if (where / "classInd.txt").is_file():
            return where
    raise FileNotFoundError(f"{root}: no ucfTrainTestlist/classInd.txt in it or beside it (ucf101: needs the "
                            "official train/test lists)")


@register_dataset("ucf101", "video", reads_path=True, template="a video of a person doing {}")
def read_ucf101(root: Path, modality: str = "video", max_per_class: int | None = None, seed: int = 0,
                split: str = "1") -> RawData:
    """List UCF-101 under root with official split K."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ucf101 root does not exist")
    if split not in {"1", "2", "3"}:
        raise ValueError(f"ucf101:{root}?split={split}: the split must be 1, 2 or 3")
    lists = _lists(root)
    classes = []
    for line in _lines(lists / "classInd.txt"):
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise ValueError(f"{lists / 'classInd.txt'}: {line!r} is not '<index> <ClassName>'")
        classes.append(name.strip())
    label = {name: i for i, name in enumerate(classes)}
    files, parts = [], []
    for part in ("train", "test"):
        listing = lists / f"{part}list0{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing}: not found")
        for line in _lines(listing):
            rel = line.split()[0].replace("\\", "/")  # the train list also carries the 1-based class index
            cls = rel.split("/")[0]
            if cls not in label or not NAME.search(rel):
                raise ValueError(f"{listing}: {rel!r} is not <Class>/v_<Class>_gNN_cMM.avi of a class in classInd")
            if not (root / rel).is_file():
                raise FileNotFoundError(f"{listing}: {root / rel} is listed but missing")
            files.append(rel)
            parts.append(part)
    y = np.array([label[f.split("/")[0]] for f in files], dtype=np.int64)
    groups = np.array([f"{f.split('/')[0]}_g{NAME.search(f)['group']}" for f in files])
    keep = per_class_draw(y, max_per_class, seed, np.array(parts))
    names = tuple(words(c) for c in classes)
    split_arr = np.array(parts)[keep]
    check_classes(f"ucf101:{root}", y[keep], names, MIN_PER_CLASS, split_arr)
    kept = [files[i] for i in keep]
    return RawData(f"ucf101:{root.name}", "video", FileSamples(root, kept, "video"), y[keep], names,
                   sources=np.array(kept), split=split_arr, groups=groups[keep])
