"""Wall-clock time by phase of a run (data generation and feature extraction per source, the backbone's
pretraining or loading, training, evaluation, probes, checkpoints, the report), summed over this process. Each phase
counts only its own time, not that of the phases nested in it, so the phases add up to the time they cover.
`mmcl-lab run` prints them; `benchmarks/first_run.py` tabulates them for a cold and a warm run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

_totals: dict[str, float] = {}
_open: list[float] = []  # per open phase: the time its nested phases took so far


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside this block, less that of the phases nested in it, towards phase name."""
    start = time.perf_counter()
    _open.append(0.0)
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        nested = _open.pop()
        _totals[name] = _totals.get(name, 0.0) + elapsed - nested
        if _open:
            _open[-1] += elapsed


def phase_times() -> dict[str, float]:
    """Seconds per phase so far, in the order the phases first ran."""
    return dict(_totals)


def reset_phases() -> None:
    """Forget the times so far (the start of a command)."""
    _totals.clear()


def phase_summary(times: dict[str, float], top: int = 6) -> str:
    """One line: the slowest phases with their seconds, then the total."""
    slowest = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {s:.1f} s" for name, s in slowest) + f"; {sum(times.values()):.1f} s in all"
