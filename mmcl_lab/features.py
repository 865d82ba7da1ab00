"""The one encode pipeline: a dataset spec -> raw signals -> a frozen encoder on the run's device -> features,
cached on disk keyed by (encoder, data). The stream, the pretraining corpus and your own data all come through
`load_features`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import RawData, load_raw
from .encoders import create_encoder
from .utils import agree, atomic_write_bytes, barrier, cache_path, dist_info, read_tensor_file, tensor_file_bytes


@dataclass(frozen=True, eq=False)
class Features:
    """One dataset encoded: its raw signals, their frozen features, the feature space and their identity."""

    raw: RawData
    tokens: Tensor  # (N, T, F) float32 on the CPU
    space: str  # the feature space the encoder writes into (the backbone keeps one input adapter per space)
    key: list[str]  # [encoder identity, data fingerprint]: what the features depend on


def load_features(spec: str, modality: str, encoder_spec: str, n_per_class: int, seed: int, cache_dir: str = "",
                  batch_size: int = 64, device: torch.device | str = "cpu", progress: bool = True,
                  **options) -> Features:
    """The dataset spec names for modality, encoded by encoder_spec: both read from the cache when they can be."""
    raw = load_raw(spec, modality, n_per_class, seed, cache_dir, **options)
    encoder, fingerprint = create_encoder(encoder_spec), data_fingerprint(raw)
    tokens = cached_features(encoder, raw, cache_dir, batch_size, device, progress, fingerprint)
    return Features(raw, tokens, encoder.feature_space, [encoder.cache_key(), fingerprint])


def data_fingerprint(raw: RawData) -> str:
    """A content hash of the signals and labels (so a changed dataset never reuses stale features)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(raw.x).tobytes())
    h.update(raw.y.astype(np.int64).tobytes())
    h.update(json.dumps([raw.class_names, raw.sample_rate]).encode())
    return h.hexdigest()[:20]


@torch.no_grad()
def encode(encoder, raw: RawData, batch_size: int = 64, device: torch.device | str = "cpu",
           progress: bool = True) -> Tensor:
    """Run the frozen encoder over all samples: (N, T, F) float32 on the CPU. Under torchrun each process
    encodes every world-th sample and the shards are gathered."""
    encoder = encoder.to(device)
    rank, world = dist_info()
    rows = np.arange(rank, len(raw), world)
    chunks = []
    batches = range(0, len(rows), batch_size)
    for start in tqdm(batches, desc=f"encode {raw.name}", disable=not progress or rank > 0, leave=False):
        x = encoder.preprocess(raw.x[rows[start:start + batch_size]], raw.sample_rate).to(device)
        chunks.append(encoder(x).float().cpu())
    tokens = torch.cat(chunks)
    if world > 1:
        shards = [None] * world
        torch.distributed.all_gather_object(shards, tokens)  # in-memory exchange between our processes
        tokens = torch.empty(len(raw), *tokens.shape[1:])
        for r, shard in enumerate(shards):
            tokens[r::world] = shard
    if not torch.isfinite(tokens).all():
        raise ValueError(f"encoder {encoder.cache_key()} produced NaN/inf features on {raw.name!r}")
    return tokens


def cached_features(encoder, raw: RawData, cache_dir: str = "", batch_size: int = 64,
                    device: torch.device | str = "cpu", progress: bool = True,
                    fingerprint: str | None = None) -> Tensor:
    """Features of raw under encoder, computed once and then read from the cache (fingerprint: raw's
    data_fingerprint, when the caller has it already)."""
    fingerprint = fingerprint or data_fingerprint(raw)
    key_src = json.dumps({"encoder": encoder.cache_key(), "data": fingerprint})
    path = cache_path(cache_dir, "features", raw.name, key_src, ".safetensors")
    barrier()  # every process sees the same cache state
    if agree(path.exists()):  # a hit only where every process has the file (caches may be per machine)
        return _read(path, key_src, len(raw), encoder.dim)
    tokens = encode(encoder, raw, batch_size, device, progress)
    if not path.exists():  # each process fills its own cache; into a shared one, identical bytes, atomically renamed
        # float16 on disk halves the cache; training reads float32 (the rounding is below feature noise).
        atomic_write_bytes(path, tensor_file_bytes({"tokens": tokens.half().contiguous()}, {"key": key_src}))
    barrier()
    tokens = tokens.half().float()  # the same values a cache hit returns: runs do not depend on hits
    return tokens


def _read(path: Path, key_src: str, n: int, dim: int) -> Tensor:
    tensors, metadata = read_tensor_file(path, "delete it and the features are recomputed")
    stored_key, tokens = metadata.get("key"), tensors.get("tokens", torch.empty(0)).float()
    if not torch.isfinite(tokens).all():
        raise ValueError(f"{path}: the feature cache holds NaN or infinite values; delete it to recompute")
    if stored_key != key_src or tokens.shape[0] != n or tokens.shape[-1] != dim:
        raise ValueError(f"{path}: written for {stored_key}, shape {tuple(tokens.shape)}; expected "
                         f"{key_src} with {n} samples of dim {dim}. Delete the file to recompute.")
    return tokens
