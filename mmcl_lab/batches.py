"""Pools of cached features and the shuffled mini-batches drawn from them (training and pretraining alike), and
the chunked passes that embed a whole set without sending it through the model at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Batch:
    """A mini-batch of cached features from one feature space and one modality."""

    x: Tensor  # (B, T, F)
    y: Tensor  # (B,) class ids
    space: str
    modality: str
    index: Tensor | None = None  # (B,) the rows of its pool that it holds, when drawn by iterate_batches
    pool: int = 0  # which of the pools handed to iterate_batches


def iterate_batches(pools: list[Batch], batch_size: int, generator: torch.Generator,
                    device: torch.device) -> Iterator[Batch]:
    """Shuffled mini-batches from each pool, with the order of batches shuffled across pools."""
    plan = []
    for p, pool in enumerate(pools):
        order = torch.randperm(len(pool.y), generator=generator)
        plan += [(p, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    for j in torch.randperm(len(plan), generator=generator).tolist():
        p, idx = plan[j]
        pool = pools[p]
        yield Batch(to_device(pool.x[idx], device), to_device(pool.y[idx], device), pool.space, pool.modality,
                    idx, p)


def in_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, size: int, device: torch.device) -> Tensor:
    """fn over x (N, ...) in chunks of at most size rows, each moved to device as it is needed, concatenated on
    device: a heavy pass (evaluation, statistics, probes) never holds a whole set in the model at once."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return torch.cat([fn(to_device(x[i:i + size], device)) for i in range(0, max(len(x), 1), size)])


def to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """x on device; a CPU tensor bound for a GPU goes through pinned memory, so the copy runs asynchronously."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def n_batches(pools: list[Batch], batch_size: int) -> int:
    """Mini-batches per epoch over pools."""
    return sum(-(-len(p.y) // batch_size) for p in pools)


def merge_spaces(items: Iterable[tuple[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """Feature spaces from (space, (tokens, dim)) pairs: the most tokens seen per space; dims must agree."""
    spaces: dict[str, tuple[int, int]] = {}
    for space, (n_tok, dim) in items:
        if space in spaces and spaces[space][1] != dim:
            raise ValueError(f"feature space {space!r} has dim {dim} here and {spaces[space][1]} elsewhere")
        spaces[space] = (max(int(n_tok), spaces.get(space, (0, 0))[0]), int(dim))
    return spaces
