"""Seeding, RNG state capture, device choice and atomic file writes."""

from __future__ import annotations

import json
import os
import random
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states as JSON-able values (torch's as a list of bytes)."""
    np_state = np.random.get_state()
    return {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _jsonable(obj: Any) -> Any:
    return [_jsonable(o) for o in obj] if isinstance(obj, tuple) else obj


def _tuples(obj: Any) -> Any:
    return tuple(_tuples(o) for o in obj) if isinstance(obj, list) else obj


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA (this process's GPU under torchrun), then MPS, then CPU; else torch.device(name)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return device


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so that a crash leaves either the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """atomic_write_bytes for a JSON document."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- data parallelism (torchrun) -------------------------------------------------------------------------


def init_distributed() -> None:
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA); no-op otherwise."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if dist_info()[1] > 1:
        torch.distributed.barrier()


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. generates and caches data); the others run it after, from the cache."""
    rank, world = dist_info()
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    yield
    if world > 1 and rank == 0:
        torch.distributed.barrier()


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); full precision elsewhere."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
