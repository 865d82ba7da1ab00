"""`nyu_depth_v2:<file.mat>`: the labelled NYU-Depth v2 release, depth maps with their scene types as classes.

Data card
- What: 1,449 indoor Kinect frames, 640x480, with depth in metres and one of 27 scene types (bedroom, kitchen,
  ...), from 464 scenes in 3 US cities. 2.8 GB.
- Layout read: nyu_depth_v2_labeled.mat, MATLAB 7.3 (an HDF5 file, read with h5py, one depth map at a time).
  As HDF5 stores MATLAB's column-major arrays, `depths` is (N, 640, 480) there and each map is transposed back
  to 480x640; `sceneTypes` holds references to char arrays (uint16 codes), decoded here.
- Split: the official one when splits.mat (from the NYU toolbox: trainNdxs, testNdxs, 1-based) lies beside the
  file or is named by `?splits=PATH`; otherwise the stream draws a seeded split. Scene types with fewer than
  `?min_per_class=` frames (default 3; a train, a validation and a test frame) are left out, with a warning
  naming them.
- Classes: the scene types as published, underscores read as spaces ("living_room" -> "living room").
- Licence: no licence is stated; the authors ask for the citation. Citation: N. Silberman, D. Hoiem, P. Kohli,
  R. Fergus, "Indoor Segmentation and Support Inference from RGBD Images", ECCV 2012.
- Obtain: nyu_depth_v2_labeled.mat and splits.mat from the NYU Depth Dataset V2 page at NYU;
  `modalities.depth.data=nyu_depth_v2:/data/nyu_depth_v2_labeled.mat`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from .base import RawData, register_dataset
from .files import LazySamples, labelled_rows


class H5Depths(LazySamples):
    """Rows of the file's `depths` dataset, opened once per process (h5py handles do not survive a fork)."""

    modality = "depth"

    def __init__(self, path: Path, rows: np.ndarray):
        self.path, self.rows = Path(path), np.asarray(rows)
        self.ids = tuple(f"{self.path.name}#{r}" for r in self.rows)
        self._file, self._pid = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, i: int) -> np.ndarray:
        if self._file is None or self._pid != os.getpid():
            import h5py
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        depth = self._file["depths"][int(self.rows[i])].T  # (640, 480) stored -> (480, 640) metres
        return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # invalid -> no return

    def manifest(self) -> list[tuple[str, int, int]]:
        st = os.stat(self.path)
        return [(sample, st.st_size, st.st_mtime_ns) for sample in self.ids]


def _strings(f, name: str) -> list[str]:
    """A MATLAB cell array of char arrays: references, each to a (length, 1) uint16 array of character codes."""
    refs = np.asarray(f[name]).reshape(-1)
    return ["".join(chr(int(c)) for c in np.asarray(f[ref]).reshape(-1)) for ref in refs]


def _official_split(path: Path, n: int) -> np.ndarray:
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
        test = np.asarray(mat["testNdxs"]).reshape(-1).astype(int) - 1  # 1-based in MATLAB
    except Exception as err:
        raise ValueError(f"{path}: not a readable splits.mat with testNdxs ({type(err).__name__}: {err})") from None
    if test.size and (test.min() < 0 or test.max() >= n):
        raise ValueError(f"{path}: testNdxs reach {test.max() + 1}, but the file has {n} frames")
    split = np.full(n, "train")
    split[test] = "test"
    return split


@register_dataset("nyu_depth_v2", "depth", reads_path=True, template="a depth map of a {}")
def read_nyu_depth_v2(path: Path, modality: str = "depth", max_per_class: int | None = None, seed: int = 0,
                      splits: str = "", min_per_class: str = str(MIN_PER_CLASS)) -> RawData:
    """List the frames of the labelled .mat file with their scene types."""
    import h5py
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nyu_depth_v2 expects the labelled .mat file (nyu_depth_v2_labeled.mat)")
    try:
        with h5py.File(path, "r") as f:
            n = f["depths"].shape[0]
            scenes = _strings(f, "sceneTypes")
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a MATLAB 7.3 file with depths and sceneTypes ({type(err).__name__}: "
                         f"{err})") from None
    if len(scenes) != n:
        raise ValueError(f"{path}: {len(scenes)} scene types for {n} depth maps")
    split_path = Path(splits).expanduser() if splits else path.with_name("splits.mat")
    split = _official_split(split_path, n) if split_path.is_file() else None
    rows, y, class_names, part = labelled_rows(f"nyu_depth_v2:{path}", scenes, int(min_per_class), split,
                                               max_per_class, seed)
    return RawData(f"nyu_depth_v2:{path.stem}", "depth", H5Depths(path, rows), y, class_names,
                   sources=np.array([f"{path.name}#{r}" for r in rows]), split=part)
