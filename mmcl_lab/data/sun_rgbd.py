"""`sun_rgbd:<root>`: SUN RGB-D depth images with their scene labels, in the release's folder layout.

Data card
- What: 10,335 RGB-D frames from four sensors (Kinect v1 and v2, RealSense, Xtion) with one scene label each
  (45 scene categories), 37 GB with the colour images.
- Layout read: every folder below <root> that holds scene.txt (one line: the scene label) and depth/<name>.png,
  as SUNRGBD/<sensor>/<source>/<frame>/ unpacks. Depth PNGs are 16-bit with the release's bit rotation (the
  toolbox's `bitor(bitshift(d, -3), bitshift(d, 16 - 3))`), in millimetres: decoded here to metres.
- Split: the official one when allsplit.mat (SUNRGBDtoolbox/traintestSUNRGBD/, MATLAB v5: cell arrays
  alltrain and alltest of frame paths) lies in <root> or beside it, or is named by `?splits=PATH`; frame
  paths are matched on the part after ".../SUNRGBD/". Otherwise the stream draws a seeded split. Scene
  labels with fewer than `?min_per_class=` frames (default 3) are left out, with a warning naming them.
- Classes: the scene labels as published, underscores read as spaces.
- Licence: no licence is stated; cite the four source datasets as the release asks. Citation: S. Song,
  S. P. Lichtenberg, J. Xiao, "SUN RGB-D: A RGB-D Scene Understanding Benchmark Suite", CVPR 2015.
- Obtain: SUNRGBD.zip and SUNRGBDtoolbox.zip from the SUN RGB-D page at Princeton;
  `modalities.depth.data=sun_rgbd:/data/SUNRGBD`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MIN_PER_CLASS
from .base import RawData, register_dataset
from .files import FileSamples, is_data, labelled_rows


def read_sun_depth(path: Path) -> np.ndarray:
    """One SUN RGB-D depth PNG -> (H, W) float32 metres, 0 = no return (the bit rotation undone)."""
    from PIL import Image
    with Image.open(path) as im:
        d = np.asarray(im, dtype=np.uint16)  # PIL reads the 16-bit PNG as I;16 or I
    if d.ndim != 2:
        raise ValueError(f"expected a 16-bit single-channel depth PNG, got shape {d.shape}")
    d = (d >> 3) | (d << 13)  # uint16 arithmetic, as the toolbox's bitshifts
    return d.astype(np.float32) / 1000.0


def _official_split(path: Path, frames: list[str]) -> np.ndarray:
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
        test = {str(np.asarray(p).reshape(-1)[0]).rstrip("/").split("SUNRGBD/")[-1]
                for p in np.asarray(mat["alltest"]).reshape(-1)}
    except Exception as err:
        raise ValueError(f"{path}: not a readable allsplit.mat with alltest ({type(err).__name__}: {err})") from None
    return np.array(["test" if f in test else "train" for f in frames])


@register_dataset("sun_rgbd", "depth", reads_path=True, template="a depth map of a {}")
def read_sun_rgbd(root: Path, modality: str = "depth", max_per_class: int | None = None, seed: int = 0,
                  splits: str = "", min_per_class: str = str(MIN_PER_CLASS)) -> RawData:
    """List the frames under root (folders with scene.txt and depth/*.png) with their scene labels."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: sun_rgbd root does not exist")
    frames, files, scenes = [], [], []
    for scene_file in sorted(root.rglob("scene.txt")):
        frame = scene_file.parent
        if not is_data(frame):
            continue
        depths = sorted(p for p in (frame / "depth").glob("*.png") if is_data(p))
        label = scene_file.read_text(encoding="utf-8").strip()
        if not depths or not label:
            raise ValueError(f"{frame}: a frame needs depth/<name>.png and a non-empty scene.txt")
        frames.append(f"{root.name}/{frame.relative_to(root).as_posix()}".split("SUNRGBD/")[-1])
        files.append(depths[0].relative_to(root).as_posix())
        scenes.append(label)
    if not files:
        raise ValueError(f"{root}: no frames (folders holding scene.txt and depth/*.png)")
    found = [where / "SUNRGBDtoolbox" / "traintestSUNRGBD" / "allsplit.mat" for where in (root, root.parent)]
    split_path = Path(splits).expanduser() if splits else next((p for p in found if p.is_file()), found[0])
    split = _official_split(split_path, frames) if split_path.is_file() else None
    keep, y, class_names, part = labelled_rows(f"sun_rgbd:{root}", scenes, int(min_per_class), split,
                                               max_per_class, seed)
    kept = [files[i] for i in keep]
    return RawData(f"sun_rgbd:{root.name}", "depth", FileSamples(root, kept, "depth", read_sun_depth), y,
                   class_names, sources=np.array(kept), split=part)
