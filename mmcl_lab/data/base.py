"""The dataset contract: RawData, registration, and loading a dataset by its config spec.

Every source returns a RawData whose x follows its modality's layout (modalities/<name>.py says which: image
(N, H, W) uint8 grey, audio (N, L) float32 waveforms, ...). A spec is a registered name ("mnist"), generated
once and cached on disk as .npz (no pickle) keyed by (dataset, version, size, seed, options), or a reader with
a path ("folder:/data/root"), read where it lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..registry import DATASETS, MODALITIES
from ..utils import CorruptFile, atomic_write_bytes, cache_path, main_process_first


def register_dataset(name: str, modality: str | None, version: int = 1, reads_path: bool = False):
    """Register a source. A generator fn(n_per_class, seed, **options) -> RawData is cached (bump version when
    its output changes); a reader (reads_path=True) fn(path, modality, max_per_class) -> RawData is given the
    path after "name:" in the spec and reads it where it lies. modality=None: the source serves any modality."""
    def add(fn):
        fn.modality, fn.version, fn.reads_path = modality, version, reads_path
        return DATASETS.register(name)(fn)
    return add


@dataclass(frozen=True, eq=False)
class RawData:
    """Signals of one modality with integer labels into class_names."""

    name: str
    modality: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    sample_rate: int = 0  # audio only
    sources: np.ndarray | None = None  # (N,) str: where each sample comes from ("mnist:123"), when known

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if self.modality not in MODALITIES:
            raise ValueError(f"{where}: unknown modality {self.modality!r}; "
                             f"expected one of {', '.join(MODALITIES.names())}")
        layout = MODALITIES.get(self.modality)
        if self.x.ndim != layout.ndim:
            raise ValueError(f"{where}: {self.modality} data must be {layout.layout} ({layout.ndim} dimensions), "
                             f"got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(f"{where}: {len(self.x)} samples but {len(self.y)} labels")
        if self.sources is not None and len(self.sources) != len(self.y):
            raise ValueError(f"{where}: {len(self.sources)} source ids for {len(self.y)} samples")
        names = [str(c).strip() for c in self.class_names]
        if any(not n for n in names):
            raise ValueError(f"{where}: every class needs a non-empty name, got {self.class_names}")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: duplicate class names in {self.class_names}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(names)):
            raise ValueError(f"{where}: labels must lie in [0, {len(names) - 1}], "
                             f"found {int(self.y.min())}..{int(self.y.max())}")
        empty = [n for i, n in enumerate(names) if not np.any(self.y == i)]
        if empty:
            raise ValueError(f"{where}: classes without samples: {empty}")
        if self.x.dtype.kind == "f" and not np.isfinite(self.x).all():
            raise ValueError(f"{where}: signals contain NaN or infinite values")

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"RawData({self.name!r}, {self.modality}, {len(self)} samples, "
                f"{len(self.class_names)} classes, x{tuple(self.x.shape)})")


def load_raw(spec: str, modality: str, n_per_class: int, seed: int, cache_dir: str = "", **options) -> RawData:
    """The dataset a spec names: a generator's output (made once, then read from the cache) or a reader's
    ("folder:<root>"). options go to the generator (e.g. the pretraining corpus's shift) and into the cache key."""
    name, _, where = spec.partition(":")
    make = DATASETS.get(name)
    if make.reads_path:
        return make(Path(where).expanduser(), modality, max_per_class=n_per_class)
    if make.modality != modality:
        raise ValueError(f"dataset {spec!r} is {make.modality} data, but was configured for {modality}")
    key = [spec, make.version, n_per_class, seed, *([options] if options else [])]
    path = cache_path(cache_dir, "raw", spec, key, ".npz")
    with main_process_first():  # under torchrun, every process reads what rank 0 generated
        if path.exists():
            return _read_npz(path, spec, modality)
        raw = make(n_per_class=n_per_class, seed=seed, **options)
        _write_npz(path, raw)
        return raw


def _write_npz(path: Path, raw: RawData) -> None:
    import io
    buf = io.BytesIO()
    sources = {} if raw.sources is None else {"sources": np.asarray(raw.sources, dtype=str)}
    np.savez(buf, x=raw.x, y=raw.y, class_names=np.array(raw.class_names), sample_rate=raw.sample_rate, **sources)
    atomic_write_bytes(path, buf.getvalue())


def _read_npz(path: Path, name: str, modality: str) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as f:
            return RawData(name, modality, f["x"], f["y"], tuple(str(c) for c in f["class_names"]),
                           int(f["sample_rate"]), f["sources"] if "sources" in f else None)
    except Exception as err:  # a torn or flipped npz fails its zip CRC (BadZipFile) or its header
        raise CorruptFile(f"{path}: unreadable cached dataset ({type(err).__name__}: {err}); delete it and the "
                          "data are generated again") from None


def split_indices(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified train/test split (every class in both parts when it has 2+ samples)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(max(1, round(len(idx) * test_fraction)), len(idx) - 1) if len(idx) > 1 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))
