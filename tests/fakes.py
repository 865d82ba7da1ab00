"""Tiny fakes of the standard releases' layouts, with their quirks, for the dataset readers' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image


def esc50(root: Path, categories=("dog", "chirping_birds", "rain"), per_fold: int = 1) -> Path:
    """ESC-50-master/: audio/<fold>-<id>-A-<target>.wav and meta/esc50.csv in the release's column order."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, category in zip((0, 14, 10), categories):  # the release's targets are not 0..C-1 in a subset
        for fold in range(1, 6):
            for k in range(per_fold):
                name = f"{fold}-{100 * target + k}-A-{target}.wav"
                sf.write(root / "audio" / name, rng.normal(0, 0.1, 4410).astype(np.float32), 44100)
                lines.append(f"{name},{fold},{target},{category},False,{100 * target + k},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def clip(path: Path, rng, width: int = 32, height: int = 24, frames: int = 10, rate: int = 25) -> None:
    """A video file (mpeg4, in the container its suffix names) of random colour frames."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def ucf101(root: Path, classes=("ApplyEyeMakeup", "YoYo", "Archery"), groups: int = 4, clips: int = 2) -> Path:
    """UCF-101/<Class>/v_<Class>_gNN_cMM.avi plus ucfTrainTestlist/ beside it, CRLF line ends as released;
    group 1 is the test list. Returns the UCF-101 folder."""
    rng = np.random.default_rng(0)
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    train, test = [], []
    for i, c in enumerate(classes, start=1):
        for g in range(1, groups + 1):
            for k in range(1, clips + 1):
                rel = f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi"
                clip(videos / rel, rng)
                (test.append(rel) if g == 1 else train.append(f"{rel} {i}"))
    (lists / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)).encode())
    (lists / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in train).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in test).encode())
    return videos


def nyu_depth_v2(root: Path, scenes=("bedroom", "kitchen", "living_room"), per_scene: int = 5,
                 rare: str = "study") -> Path:
    """nyu_depth_v2_labeled.mat as MATLAB 7.3 writes it (HDF5, column-major: depths (N, W, H), sceneTypes a cell
    array of references to uint16 char arrays), one scene type too rare to split, and splits.mat (1-based)."""
    import h5py
    from scipy.io import savemat
    root.mkdir(parents=True, exist_ok=True)
    labels = [s for s in scenes for _ in range(per_scene)] + [rare]
    rng = np.random.default_rng(0)
    depths = rng.uniform(0.5, 4.0, (len(labels), 48, 36)).astype(np.float32)  # (N, W, H): maps are 36 x 48
    depths[0, 0, 0] = np.nan  # invalid readings occur
    path = root / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f["depths"] = depths
        refs = f.create_group("#refs#")
        ref_type = h5py.special_dtype(ref=h5py.Reference)
        cells = np.empty((1, len(labels)), dtype=ref_type)
        for i, label in enumerate(labels):
            refs[f"s{i}"] = np.array([[ord(ch)] for ch in label], dtype=np.uint16)  # (length, 1)
            cells[0, i] = refs[f"s{i}"].ref
        f.create_dataset("sceneTypes", data=cells, dtype=ref_type)
    test = np.array([i for i in range(len(labels)) if i % per_scene == 0]) + 1
    train = np.array([i for i in range(len(labels)) if i % per_scene]) + 1
    savemat(root / "splits.mat", {"trainNdxs": train[:, None], "testNdxs": test[:, None]})
    return path


def _depth_png(path: Path, metres: np.ndarray) -> None:
    mm = (metres * 1000).astype(np.uint16)
    rotated = (mm << 3) | (mm >> 13)  # the release stores the bits rotated by 3
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rotated.astype(np.uint16)).save(path)


def sun_rgbd(root: Path, scenes=("office", "bathroom"), per_scene: int = 4) -> Path:
    """SUNRGBD/kv1/NYUdata/NYU%04d/{depth/NYU%04d.png, scene.txt} and the toolbox's allsplit.mat beside it."""
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    base, test = root / "SUNRGBD", []
    k = 0
    for scene in scenes:
        for i in range(per_scene):
            k += 1
            frame = base / "kv1" / "NYUdata" / f"NYU{k:04d}"
            _depth_png(frame / "depth" / f"NYU{k:04d}.png", rng.uniform(0.5, 5.0, (30, 40)))
            (frame / "scene.txt").write_text(scene)
            if i == 0:
                test.append(f"/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU{k:04d}/")
    toolbox = base / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    toolbox.mkdir(parents=True)
    savemat(toolbox / "allsplit.mat", {"alltest": np.array(test, dtype=object)[None, :],
                                       "alltrain": np.array(["/n/fs/sun3d/data/SUNRGBD/x"], dtype=object)[None, :]})
    return base


def imagenet(root: Path, wnids=("n01440764", "n01443537", "n02102040"), per_class: int = 4) -> Path:
    """train/<wnid>/*.JPEG in colour and varied sizes, a flat val/ with LOC_val_solution.csv, and
    LOC_synset_mapping.txt."""
    rng = np.random.default_rng(0)
    mapping = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
               "n02102040": "English springer, English springer spaniel"}
    solution = ["ImageId,PredictionString"]
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid).mkdir(parents=True)
        colour = np.zeros(3)
        colour[c % 3] = 200
        for i in range(per_class):
            h, w = 30 + 4 * i, 40
            pixels = np.clip(colour + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / f"{wnid}_{i}.JPEG")
        for i in range(2):
            (root / "val").mkdir(exist_ok=True)
            image_id = f"ILSVRC2012_val_{c * 10 + i:08d}"
            pixels = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "val" / f"{image_id}.JPEG")
            solution.append(f"{image_id},{wnid} 10 20 30 40")
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {mapping[w]}\n" for w in wnids))
    return root
