"""The dataset contract: RawData, registration, and loading a dataset by its config spec.

Every source returns a RawData whose x follows its modality's layout (modalities/<name>.py says which: image
(N, H, W) uint8 grey, audio (N, L) float32 waveforms, ...) or is a LazySamples (files.py) that decodes one
sample at a time. A spec is a registered name ("mnist"), generated once and cached on disk as .npz (no pickle)
keyed by (dataset, version, size, seed, options), or a reader with a path ("folder:/data/root",
"esc50:/data/ESC-50-master"), listed where it lies and decoded only when its features are extracted.
"""

from __future__ import annotations

import inspect
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..registry import DATASETS, MODALITIES
from ..utils import CorruptFile, atomic_write_bytes, cache_path, main_process_first
from .files import LazySamples


def register_dataset(name: str, modality: str | None, version: int = 1, reads_path: bool = False,
                     template: str = ""):
    """Register a source. A generator fn(n_per_class, seed, **options) -> RawData is cached (bump version when
    its output changes); a reader (reads_path=True) fn(path, modality, max_per_class, seed) -> RawData is given
    the path after "name:" in the spec and lists it where it lies. modality=None: the source serves any modality.
    template: the text its class names are aligned to ("{}" is the name), when the dataset has its own."""
    def add(fn):
        fn.modality, fn.version, fn.reads_path, fn.template = modality, version, reads_path, template
        return DATASETS.register(name)(fn)
    return add


@dataclass(frozen=True, eq=False)
class RawData:
    """Signals of one modality with integer labels into class_names."""

    name: str
    modality: str
    x: np.ndarray | LazySamples  # in the modality's layout, or decoded sample by sample
    y: np.ndarray
    class_names: tuple[str, ...]
    sample_rate: int = 0  # audio only
    sources: np.ndarray | None = None  # (N,) str: where each sample comes from ("mnist:123"), when known
    split: np.ndarray | None = None  # (N,) "train" | "test": the release's official split, when it has one
    groups: np.ndarray | None = None  # (N,) str: samples that must stay on one side of a split (UCF-101's gNN)

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if self.modality not in MODALITIES:
            raise ValueError(f"{where}: unknown modality {self.modality!r}; "
                             f"expected one of {', '.join(MODALITIES.names())}")
        layout = MODALITIES.get(self.modality)
        if not self.lazy and self.x.ndim != layout.ndim:
            raise ValueError(f"{where}: {self.modality} data must be {layout.layout} ({layout.ndim} dimensions), "
                             f"got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(f"{where}: {len(self.x)} samples but {len(self.y)} labels")
        for field_name in ("sources", "split", "groups"):
            value = getattr(self, field_name)
            if value is not None and len(value) != len(self.y):
                raise ValueError(f"{where}: {len(value)} {field_name} entries for {len(self.y)} samples")
        if self.split is not None and not set(np.unique(self.split)) <= {"train", "test"}:
            raise ValueError(f"{where}: split entries must be 'train' or 'test', got {sorted(set(self.split))}")
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
        if not self.lazy and self.x.dtype.kind == "f" and not np.isfinite(self.x).all():
            raise ValueError(f"{where}: signals contain NaN or infinite values")  # lazy samples: checked as decoded

    @property
    def lazy(self) -> bool:
        """True when x decodes its samples on demand (a reader's files) instead of holding them."""
        return isinstance(self.x, LazySamples)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"RawData({self.name!r}, {self.modality}, {len(self)} samples, "
                f"{len(self.class_names)} classes, {'lazy' if self.lazy else f'x{tuple(self.x.shape)}'})")


def template_for(configured: str, raw: RawData) -> str:
    """The text template of raw's classes: the config's when it names one, else the one its dataset registered
    (raw.name is the spec's registered name, before any ":"), else its modality's default."""
    source = raw.name.partition(":")[0]
    own = DATASETS.get(source).template if source in DATASETS else ""
    return configured or own or MODALITIES.get(raw.modality).template


def load_raw(spec: str, modality: str, n_per_class: int, seed: int, cache_dir: str = "", **options) -> RawData:
    """The dataset a spec names: a generator's output (made once, then read from the cache) or a reader's
    ("folder:<root>"). options go to the generator (e.g. the pretraining corpus's shift) and into the cache key."""
    name, _, where = spec.partition(":")
    make = DATASETS.get(name)
    if make.reads_path:
        where, _, query = where.partition("?")  # "esc50:/data/ESC-50-master?fold=2": the reader's options
        raw = make(Path(where).expanduser(), modality, max_per_class=n_per_class, seed=seed,
                   **reader_options(make, spec, query))
        if raw.modality != modality:
            raise ValueError(f"dataset {spec!r} is {raw.modality} data, but was configured for {modality}")
        return raw
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


def reader_options(make, spec: str, query: str) -> dict[str, str]:
    """The "?key=value&..." options of a reader's spec, each one the reader takes, or a ValueError naming them."""
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    known = [p for p in inspect.signature(make).parameters if p not in ("root", "path", "modality", "max_per_class",
                                                                          "seed")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"dataset {spec!r}: unknown option(s) {unknown}; {spec.partition(':')[0]} takes "
                         f"{', '.join(known) or 'no options'}")
    return options


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


def split_indices(y: np.ndarray, test_fraction: float, seed: int,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified train/test split (every class in both parts when it has 2+ samples). With groups,
    whole groups go to one side (the clips of one UCF-101 actor and scene never straddle the split)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(max(1, round(len(idx) * test_fraction)), len(idx) - 1) if len(idx) > 1 else 0
        if groups is not None and n_test:
            rank = {g: k for k, g in enumerate(rng.permutation(np.unique(groups[idx])))}
            idx = idx[np.argsort([rank[g] for g in groups[idx]], kind="stable")]  # the class's groups in a seeded order
            end, g = n_test, groups[idx]
            while end < len(idx) and g[end] == g[end - 1]:  # the test side ends where a group ends
                end += 1
            n_test = end if end < len(idx) else n_test  # a class of one group cannot be split by groups
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))
