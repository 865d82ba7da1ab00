"""Bring your own data: root/<class name>/<file> per modality (ESC-50, UCF-101, NYU-Depth dropped in).

image: png/jpg/jpeg/bmp -> grey SIZE x SIZE; audio: wav/flac/ogg -> mono at 22,050 Hz, first 5 s at most;
video: mp4/avi/mov/webm -> FRAMES frames sampled evenly, grey SIZE x SIZE; depth: npy (H, W) metres.
Hidden files and OS metadata (`._name.wav`, `.DS_Store`, `__MACOSX/`) are skipped; 16-bit images are scaled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validate import MIN_PER_CLASS
from . import RawData

SIZE, FRAMES, SAMPLE_RATE, MAX_SECONDS = 64, 8, 22050, 5.0
EXTENSIONS = {"image": {".png", ".jpg", ".jpeg", ".bmp"}, "audio": {".wav", ".flac", ".ogg"},
              "video": {".mp4", ".avi", ".mov", ".webm"}, "depth": {".npy"}}


def _image(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        if im.mode.startswith("I") or im.mode == "F":
            # 16- and 32-bit grey: scale to 8 bits (convert("L") would clip almost everything to white)
            values = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
            im = Image.fromarray(np.clip(values / max(top, values.max()) * 255, 0, 255).round().astype(np.uint8))
        return np.asarray(im.convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)


def _audio(path: Path) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if not len(wav):
        raise ValueError("empty file: no audio samples")
    wav = torch.from_numpy(wav.mean(1))
    if rate != SAMPLE_RATE:
        wav = AF.resample(wav, rate, SAMPLE_RATE)
    out = np.zeros(int(SAMPLE_RATE * MAX_SECONDS), dtype=np.float32)
    clip = wav.numpy()[: len(out)]
    out[: len(clip)] = clip
    return out


def _video(path: Path) -> np.ndarray:
    import av
    from PIL import Image

    # Two passes, so memory stays bounded for long clips: count the frames, then keep only the FRAMES picked.
    with av.open(str(path)) as container:
        total = sum(1 for _ in container.decode(video=0))
    if not total:
        raise ValueError("no video frames")
    picks = list(np.linspace(0, total - 1, FRAMES).round().astype(int))
    kept = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:
                kept[i] = np.asarray(frame.to_image().convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)
            if i >= picks[-1]:
                break
    return np.stack([kept[i] for i in picks])


def _depth(path: Path) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    depth = np.load(path, allow_pickle=False)  # a pickled .npy is refused, never executed
    if depth.ndim != 2 or depth.dtype.kind not in "fiu":
        raise ValueError(f"expected a 2-D numeric depth map, got {depth.dtype} {depth.shape}")
    depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # invalid -> no return
    t = torch.from_numpy(depth)[None, None]
    return F.interpolate(t, size=(SIZE, SIZE), mode="nearest")[0, 0].numpy()


READERS = {"image": _image, "audio": _audio, "video": _video, "depth": _depth}
# What operating systems and archivers leave beside real files: never data.
OS_METADATA = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir"}


def _is_data(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in OS_METADATA


def _read_sample(path: Path, modality: str) -> np.ndarray:
    """One file as its modality's array; every failure names the file."""
    try:
        x = READERS[modality](path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read as {modality} ({type(err).__name__}: {err})") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{path}: {modality} sample holds NaN or infinite values")
    return x


def read_folder(root: Path, modality: str, max_per_class: int | None = None) -> RawData:
    """Read root/<class>/<file>; every unreadable file, empty class or bad name is an error naming it."""
    if modality not in READERS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(READERS)}")
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
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS[modality] and _is_data(p))
        if len(files) < MIN_PER_CLASS:
            raise ValueError(f"{folder}: class {folder.name!r} has {len(files)} {modality} files "
                             f"({', '.join(sorted(EXTENSIONS[modality]))}); it needs at least {MIN_PER_CLASS} "
                             "(a train, a validation and a test sample)")
        listing[folder] = files[:max_per_class]
    xs, ys = [], []
    for label, files in enumerate(listing.values()):
        xs += [_read_sample(path, modality) for path in files]
        ys += [label] * len(files)
    names = tuple(d.name.replace("_", " ") for d in class_dirs)
    return RawData(f"folder:{root.name}", modality, np.stack(xs), np.array(ys, dtype=np.int64), names,
                   SAMPLE_RATE if modality == "audio" else 0)
