"""The one encode pipeline: a dataset spec -> samples -> a frozen encoder on the run's device -> features, cached
on disk keyed by (encoder, data). The stream, the pretraining corpus and your own data all come through
`load_features`.

Extraction runs through a torch DataLoader (its workers decode files while the encoder runs) and writes the
features shard by shard, <cache>/features/<name>-<key>/shard_00000.safetensors, each `shard_rows` samples of
(T, F) float16 with a checksum. A killed extraction resumes at the first missing shard; under torchrun each
rank encodes every world-th shard, and a rank whose cache lacks a shard (caches per machine) encodes it itself.
A set of up to `in_memory_mb` is read into memory; a larger one stays in its shards (ShardedTokens) and is read
memory-mapped a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import RawData, load_raw
from .encoders import create_encoder
from .registry import MODALITIES
from .timing import phase
from .utils import (atomic_write_bytes, barrier, cache_path, digest, dist_info, read_tensor_file,
                    tensor_file_bytes)

FIX = "delete it and the features are recomputed"


class ShardedTokens:
    """Features left in their cache shards: (N, T, F) that index like a tensor, each access read memory-mapped and
    returned as a float32 tensor, so that training holds only the batch it draws, never the whole set."""

    def __init__(self, shards: Sequence[tuple[Path, int]], shard_rows: int, shape: tuple[int, int, int],
                 rows: np.ndarray | None = None):
        self.shards = list(shards)  # (path, byte offset of its tokens) per shard
        self.shard_rows, self._shape = shard_rows, shape  # shape: (all rows, T, F)
        self.rows = np.arange(shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self._shape[1:]))

    def subset(self, rows: np.ndarray) -> ShardedTokens:
        """These rows (of this view) as a view of their own; nothing is read."""
        return ShardedTokens(self.shards, self.shard_rows, self._shape, self.rows[rows])

    def __getitem__(self, idx) -> Tensor:
        """Rows idx (an int, a slice, an index array or tensor) as float32: (len(idx), T, F)."""
        if isinstance(idx, Tensor):
            idx = idx.cpu().numpy()
        picked = np.atleast_1d(self.rows[idx])
        out = np.empty((len(picked), *self._shape[1:]), dtype=np.float16)
        shard_of = picked // self.shard_rows
        for k in np.unique(shard_of):
            path, offset = self.shards[k]
            n = min(self.shard_rows, self._shape[0] - k * self.shard_rows)
            # A fresh map per access: its pages are let go when it is, so resident memory stays one batch.
            view = np.memmap(path, dtype=np.float16, mode="r", offset=offset, shape=(n, *self._shape[1:]))
            sel = np.flatnonzero(shard_of == k)
            out[sel] = view[picked[sel] - k * self.shard_rows]
            del view
        tokens = torch.from_numpy(out).float()
        return tokens[0] if np.ndim(self.rows[idx]) == 0 else tokens

    def clone(self) -> ShardedTokens:
        return self  # read-only: a view never changes under its holder

    def __repr__(self) -> str:
        return f"ShardedTokens({tuple(self.shape)}, {len(self.shards)} shards)"


Tokens = Tensor | ShardedTokens


@dataclass(frozen=True, eq=False)
class Features:
    """One dataset encoded: its raw signals, their frozen features, the feature space and their identity."""

    raw: RawData
    tokens: Tokens  # (N, T, F) float32: in memory, or read from the cache's shards
    space: str  # the feature space the encoder writes into (the backbone keeps one input adapter per space)
    key: list[str]  # [encoder identity, data fingerprint]: what the features depend on
    checksum: str = ""  # of the features' bytes: a digest of the cache shards' checksums

    def fingerprints(self) -> dict[str, str]:
        """Short checksums of the data, the encoder and the features, to compare bits across machines (BLAS and
        the thread count change the features' last bits, and so their checksum)."""
        return {"data": self.key[1][:16], "encoder": digest(self.key[0], 16), "features": self.checksum[:16]}


def extraction(cfg) -> dict:
    """The extraction settings of a RunConfig, and the feature spaces it asks for, as load_features takes them."""
    e = cfg.encoders
    return dict(batch_size=e.batch_size, workers=e.workers, shard_rows=e.shard_rows, in_memory_mb=e.in_memory_mb,
                shared_tower=cfg.model.shared_tower, depth=cfg.model.tower_cut)


def take_rows(tokens: Tokens, rows: np.ndarray) -> Tokens:
    """tokens[rows], without reading anything when tokens stay in the cache."""
    return tokens.subset(rows) if isinstance(tokens, ShardedTokens) else tokens[rows]


def load_features(spec: str, modality: str, encoder_spec: str, n_per_class: int, seed: int, cache_dir: str = "",
                  batch_size: int = 64, device: torch.device | str = "cpu", progress: bool = True, workers: int = 0,
                  shard_rows: int = 1024, in_memory_mb: int = 2048, shared_tower: bool = False, depth: int = 0,
                  **options) -> Features:
    """The dataset spec names for modality, encoded by encoder_spec (a real model's tower cut depth layers below
    its top): both read from the cache when they can be."""
    source = f"{modality} {spec.partition(':')[0]}"  # e.g. "video moving_digits"
    with phase(f"data: {source}"):
        raw = load_raw(spec, modality, n_per_class, seed, cache_dir, **options)
    with phase(f"features: {source}"):
        encoder, fingerprint = create_encoder(encoder_spec, depth), data_fingerprint(raw)
        tokens = cached_features(encoder, raw, cache_dir, batch_size, device, progress, fingerprint, workers,
                                 shard_rows, in_memory_mb)
        checksum = features_checksum(_shards(encoder, raw, cache_dir, batch_size, shard_rows, fingerprint)[1])
    return Features(raw, tokens, space_of(encoder, shared_tower), [encoder.cache_key(), fingerprint], checksum)


def space_of(encoder, shared_tower: bool = False) -> str:
    """The feature space encoder writes into; shared_tower: its network alone ("<modality>/<net>" -> "<net>"), one
    input adapter for every modality that network encodes."""
    return encoder.feature_space.removeprefix(f"{encoder.modality}/") if shared_tower else encoder.feature_space


def data_fingerprint(raw: RawData) -> str:
    """What the features of raw depend on: a content hash of in-memory signals, or the manifest of a reader's
    files (paths, sizes, modification times: nothing is decoded), with the labels and class names."""
    h = hashlib.sha256()
    if raw.lazy:
        h.update(raw.x.fingerprint().encode())
    else:
        h.update(np.ascontiguousarray(raw.x).tobytes())
    h.update(raw.y.astype(np.int64).tobytes())
    h.update(json.dumps([raw.class_names, raw.sample_rate]).encode())
    return h.hexdigest()[:20]


class _Prepared(torch.utils.data.Dataset):
    """raw's samples one by one, each brought to the encoder's input shape (decoded here for a reader's files)."""

    def __init__(self, raw: RawData, input_size: int, sample_rate: int = 0):
        self.x, self.sample_rate = raw.x, raw.sample_rate
        if raw.lazy and sample_rate and raw.sample_rate and hasattr(raw.x, "at_rate"):
            # files decoded straight at the rate the encoder's processor asks for, not resampled twice
            self.x, self.sample_rate = raw.x.at_rate(sample_rate), sample_rate
        conform = MODALITIES.get(raw.modality).conform
        self.conform = partial(conform, size=input_size) if raw.lazy and conform else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> np.ndarray | _Unreadable:
        try:
            sample = self.x[i]
        except ValueError as err:  # a bad file: its one-line message, not a worker's traceback
            return _Unreadable(str(err))
        return self.conform(sample) if self.conform else sample


@dataclass(frozen=True)
class _Unreadable:
    """What a DataLoader worker hands back for a file that cannot be decoded: the message naming it."""

    message: str


def _stack(samples: list) -> np.ndarray | _Unreadable:
    bad = [s for s in samples if isinstance(s, _Unreadable)]
    return bad[0] if bad else np.stack(samples)


def _encoded(encoder, raw: RawData, batches: list[list[int]], device: torch.device | str, workers: int,
             bar: tqdm | None = None) -> Iterator[Tensor]:
    """encoder over raw's rows, batch by batch (files decoded by `workers` DataLoader processes): (B, T, F) float32
    on the CPU, one tensor per batch, in order."""
    dataset = _Prepared(raw, getattr(encoder, "input_size", 64), getattr(encoder, "sample_rate", 0))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=_stack,
                                         num_workers=workers if raw.lazy else 0)
    for x in loader:
        if isinstance(x, _Unreadable):
            raise ValueError(x.message)
        with torch.inference_mode():
            tokens = encoder(encoder.preprocess(x, dataset.sample_rate).to(device)).float().cpu()
        if bar is not None:
            bar.update(len(x))
        yield tokens


def _batches(start: int, stop: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, stop))) for i in range(start, stop, size)]


def encode(encoder, raw: RawData, batch_size: int = 64, device: torch.device | str = "cpu",
           progress: bool = True, workers: int = 0) -> Tensor:
    """The frozen encoder over every sample, uncached: (N, T, F) float32 on the CPU."""
    encoder = encoder.to(device)
    with tqdm(total=len(raw), desc=f"encode {raw.name}", disable=not progress, leave=False) as bar:
        tokens = torch.cat(list(_encoded(encoder, raw, _batches(0, len(raw), batch_size), device, workers, bar)))
    _check_finite(tokens, encoder, raw)
    return tokens


def _check_finite(tokens: Tensor, encoder, raw: RawData) -> None:
    if not torch.isfinite(tokens).all():
        raise ValueError(f"encoder {encoder.cache_key()} produced NaN/inf features on {raw.name!r}")


def cached_features(encoder, raw: RawData, cache_dir: str = "", batch_size: int = 64,
                    device: torch.device | str = "cpu", progress: bool = True, fingerprint: str | None = None,
                    workers: int = 0, shard_rows: int = 1024, in_memory_mb: int = 2048) -> Tokens:
    """Features of raw under encoder: the shards the cache lacks are extracted (and written one by one), then
    all are read (fingerprint: raw's data_fingerprint, when the caller has it already)."""
    key_src, paths, shard_rows = _shards(encoder, raw, cache_dir, batch_size, shard_rows, fingerprint)
    rank, world = dist_info()
    barrier()  # every process sees the same cache state
    mine = [k for k, p in enumerate(paths) if k % world == rank and not p.exists()]
    _extract(encoder, raw, paths, mine, key_src, shard_rows, batch_size, device, progress and rank == 0, workers)
    barrier()
    lacking = [k for k, p in enumerate(paths) if not p.exists()]  # another rank's shards, in a per-machine cache
    _extract(encoder, raw, paths, lacking, key_src, shard_rows, batch_size, device, progress, workers)
    return _open(paths, key_src, len(raw), encoder.dim, shard_rows, in_memory_mb)


def _shards(encoder, raw: RawData, cache_dir: str, batch_size: int, shard_rows: int,
            fingerprint: str | None = None) -> tuple[str, list[Path], int]:
    """Where the cache keeps raw's features under encoder: (their key, the shard files, rows per shard)."""
    shard_rows = -(-shard_rows // batch_size) * batch_size  # whole batches per shard: batches as in one pass
    key_src = json.dumps({"encoder": encoder.cache_key(), "data": fingerprint or data_fingerprint(raw),
                          "shard_rows": shard_rows})
    folder = cache_path(cache_dir, "features", raw.name, key_src, "")
    paths = [folder / f"shard_{k:05d}.safetensors" for k in range(max(1, -(-len(raw) // shard_rows)))]
    return key_src, paths, shard_rows


def features_checksum(paths: list[Path]) -> str:
    """A digest of the checksums that the shards' headers carry (each of its shard's bytes): nothing else is read."""
    from safetensors import safe_open

    sums = []
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            sums.append((f.metadata() or {}).get("sha256", ""))
    return digest(sums, 64)


def _extract(encoder, raw: RawData, paths: list[Path], shards: list[int], key_src: str, shard_rows: int,
             batch_size: int, device, progress: bool, workers: int) -> None:
    """Encode the rows of these shards and write each shard as soon as its last batch is done."""
    if not shards:
        return
    encoder = encoder.to(device)
    spans = [(k * shard_rows, min((k + 1) * shard_rows, len(raw))) for k in shards]
    batches = [b for start, stop in spans for b in _batches(start, stop, batch_size)]
    total = sum(stop - start for start, stop in spans)
    with tqdm(total=total, desc=f"encode {raw.name}", disable=not progress, leave=False) as bar:
        stream = _encoded(encoder, raw, batches, device, workers, bar)
        for k, (start, stop) in zip(shards, spans):
            tokens = torch.cat([next(stream) for _ in range(-(-(stop - start) // batch_size))])  # (rows, T, F)
            _check_finite(tokens, encoder, raw)
            if not paths[k].exists():  # in a shared cache another process may have written it: identical bytes
                # float16 on disk halves the cache; training reads float32 (the rounding is below feature noise).
                atomic_write_bytes(paths[k], tensor_file_bytes({"tokens": tokens.half().contiguous()},
                                                               {"key": key_src, "rows": f"{start}:{stop}"}))


def _open(paths: list[Path], key_src: str, n: int, dim: int, shard_rows: int, in_memory_mb: int) -> Tokens:
    """Every shard checked (key, rows, checksum, finite values), one at a time; then the whole set in memory when
    it fits in in_memory_mb (filled shard by shard, never held twice), else left in the shards."""
    whole, shards, shape = None, [], None
    for k, path in enumerate(paths):
        tensors, metadata = read_tensor_file(path, FIX)
        tokens = tensors.get("tokens", torch.empty(0))
        start, stop = k * shard_rows, min((k + 1) * shard_rows, n)
        if metadata.get("key") != key_src or metadata.get("rows") != f"{start}:{stop}" or tokens.ndim != 3 \
                or tokens.shape[-1] != dim:
            raise ValueError(f"{path}: written for {metadata.get('key')} rows {metadata.get('rows')}, shape "
                             f"{tuple(tokens.shape)}; expected {key_src} rows {start}:{stop} of dim {dim}. Delete "
                             "the folder to recompute.")
        if not torch.isfinite(tokens).all():
            raise ValueError(f"{path}: the feature cache holds NaN or infinite values; {FIX}")
        shape = (n, *tokens.shape[1:])
        if k == 0 and n * tokens[0].numel() * 4 <= in_memory_mb * 2**20:  # float32 bytes of the whole set
            whole = torch.empty(shape)
        if whole is not None:
            whole[start:stop] = tokens.float()
        shards.append((path, _data_offset(path)))
    return whole if whole is not None else ShardedTokens(shards, shard_rows, shape)


def _data_offset(path: Path) -> int:
    """Where the bytes of the one tensor of a safetensors file begin: after its 8-byte length and JSON header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return 8 + n + header["tokens"]["data_offsets"][0]
