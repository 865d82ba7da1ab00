"""Hyper-parameter search on validation data only, with the same budget for every method.

Each method draws `budget` configurations from its own search space (its main knobs: lr, epochs, and its
own weight or replay knob) with one seeded sampler, trains each with `stream.evaluate_on=val` -- the test
data is never loaded -- and keeps the configuration with the best validation average accuracy (mean of
both settings). The winners ship in tuned.yaml beside this file; `mmcl-lab compare` uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .config import ConfigError, RunConfig, apply_overrides, method_settings
from .metrics import summary
from .run import run_many
from .utils import atomic_write_text

# (kind, low, high) for a log-uniform draw, or a list of choices. Every method gets lr and epochs.
COMMON = {"train.lr": ("log", 3e-4, 1e-2), "train.epochs": [3, 6, 10]}
SPACES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "joint": {},
    "ewc": {"method.params.lam": ("log", 1.0, 1e4)},
    "lwf": {"method.params.alpha": ("log", 0.1, 10.0)},
    "er": {"method.params.replay_batch": [16, 32, 64]},
    "l2p": {"train.lr": ("log", 1e-3, 3e-2), "method.params.pull": ("log", 0.1, 1.0)},
    "zscl": {"method.params.alpha": ("log", 0.1, 10.0)},
    "slca": {"method.params.lr_scale": [0.01, 0.03, 0.1, 0.3]},
    "comm": {"train.lr": ("log", 1e-3, 3e-2), "method.params.lambda_sr": ("log", 0.1, 10.0)},
}


def draw(space: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration from a search space."""
    out = {}
    for key, dist in space.items():
        if isinstance(dist, list):
            out[key] = dist[int(rng.integers(len(dist)))]
        else:
            _, low, high = dist
            out[key] = float(f"{np.exp(rng.uniform(np.log(low), np.log(high))):.3g}")
    return out


def effective(cfg: RunConfig, method: str) -> dict[str, Any]:
    """The values cfg gives to every knob in method's search space (defaults included)."""
    params = method_settings(cfg.method)
    out = {}
    for key in {**COMMON, **SPACES[method]}:
        section, _, name = key.rpartition(".")
        out[key] = getattr(params, name) if section == "method.params" else getattr(getattr(cfg, section), name)
    return out


def candidates(method: str, budget: int, seed: int = 0) -> list[dict[str, Any]]:
    """budget configurations for method: the preset's defaults first, then random draws."""
    space = {**COMMON, **SPACES[method]}
    rng = np.random.default_rng([seed, sum(map(ord, method))])
    return [{}] + [draw(space, rng) for _ in range(budget - 1)]


def tune(cfg: RunConfig, methods: list[str], budget: int, out_dir: str | Path,
         seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """Search every method's space on validation data; write search.csv and the winners as tuned.yaml."""
    unknown = [m for m in methods if m not in SPACES]
    if unknown:  # before any stream is built or any run written
        raise ConfigError(f"--methods: no search space for {unknown}; choose from {', '.join(SPACES)}")
    out = Path(out_dir)
    base = apply_overrides(cfg, {"stream.evaluate_on": "val", "train.progress": False})
    plan = [(m, i, c, s) for m in methods for i, c in enumerate(candidates(m, budget)) for s in seeds]
    jobs = [(apply_overrides(base, {"method.name": m, "seed": s, **c}), out / m / f"config_{i}" / f"seed_{s}")
            for m, i, c, s in plan]
    rows = []
    for (method, i, _, seed), (run_cfg, _), run in zip(plan, jobs, run_many(jobs, "tuning runs")):
        score = summary(run.results()).query("modality == 'all'").avg_acc.mean()
        rows.append(dict(method=method, config=i, seed=seed, val_avg_acc=score, **effective(run_cfg, method)))
    table = pd.DataFrame(rows)
    atomic_write_text(out / "search.csv", table.to_csv(index=False))
    atomic_write_text(out / "tuned.yaml", yaml.safe_dump(best(table), sort_keys=True))
    return table


def best(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method, the configuration with the highest mean validation accuracy over seeds."""
    means = table.groupby(["method", "config"], sort=False).val_avg_acc.mean().reset_index()
    winners = means.loc[means.groupby("method", sort=False).val_avg_acc.idxmax()]
    out = {}
    for method, config in zip(winners.method, winners.config):
        row = table[(table.method == method) & (table.config == config)].iloc[0]
        out[method] = {k: _plain(v) for k, v in row.items()
                       if k not in ("method", "config", "seed", "val_avg_acc") and pd.notna(v)}
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
