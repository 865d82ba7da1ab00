"""Several methods x seeds on one stream: a table of mean and std per metric, as CSV and Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import RunConfig, apply_overrides
from .metrics import summary
from .registry import METHODS
from .run import run_stream
from .streams import build_stream
from .utils import atomic_write_text

ABLATIONS = {  # COMM with one component switched off at a time
    "comm -prompts": {"prompt_depth": 0},  # re-alignment only: the frozen backbone plus the A_m maps
    "comm -self_reg": {"self_reg": "off"},
    "comm -relevance": {"relevance": "off"},
    "comm -realign": {"realign": "off"},
}
METRICS = ["avg_acc", "last_acc", "avg_inc_acc", "forgetting", "bwt", "fwt"]


def variants(methods: list[str] | None, ablation: bool) -> dict[str, tuple[str, dict]]:
    """Label -> (method name, params) for every run to make."""
    names = methods or METHODS.names()
    out = {name: (name, {}) for name in names}
    if ablation:
        out |= {label: ("comm", params) for label, params in ABLATIONS.items()}
    return out


def compare(cfg: RunConfig, methods: list[str] | None, seeds: list[int], out_dir: str | Path,
            ablation: bool = False) -> str:
    """Run every variant for every seed (resuming finished runs) and write comparison.{csv,md}."""
    out = Path(out_dir)
    rows, streams = [], {}
    for seed in seeds:
        for label, (name, params) in variants(methods, ablation).items():
            run_cfg = apply_overrides(cfg, {"seed": seed, "method.name": name, "train.progress": False})
            run_cfg = apply_overrides(run_cfg, {f"method.params.{k}": v for k, v in params.items()})
            key = (run_cfg.stream.order, seed if run_cfg.stream.order == "random" else 0)
            if key not in streams:
                streams[key] = build_stream(run_cfg)
            run_dir = out / label.replace(" ", "_") / f"seed_{seed}"
            run = run_stream(apply_overrides(run_cfg, {"out_dir": str(run_dir)}), run_dir, streams[key])
            rows.append(summary(run.results()).assign(method=label, seed=seed, memory_MB=run.memory_bytes() / 2**20))
    table = aggregate(pd.concat(rows, ignore_index=True))
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    md = to_markdown(table)
    atomic_write_text(out / "comparison.md", md)
    return md


def aggregate(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every metric per (method, setting, modality)."""
    grouped = per_run.groupby(["method", "setting", "modality"], sort=False)
    table = grouped[METRICS].mean().join(grouped[METRICS].std(ddof=0), rsuffix="_std")
    return table.assign(memory_MB=grouped.memory_MB.mean(), seeds=grouped.size()).reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    """One Markdown table per setting over all tasks, then per-modality average accuracy."""
    parts = []
    for setting in table.setting.unique():
        t = table[(table.setting == setting) & (table.modality == "all")]
        cells = t[["method"]].copy()
        for m in METRICS:
            cells[m] = [f"{a:.3f} ± {s:.3f}" for a, s in zip(t[m], t[f"{m}_std"])]
        cells["kept MB"] = t.memory_MB.round(2).to_numpy()
        parts += [f"### modality {setting} at test time (all tasks, mean ± std over {t.seeds.max()} seeds)",
                  "", cells.to_markdown(index=False), ""]
        per_mod = table[(table.setting == setting) & (table.modality != "all")]
        pivot = per_mod.pivot(index="method", columns="modality", values="avg_acc").reindex(t.method)
        parts += [f"average accuracy per modality ({setting})", "", pivot.to_markdown(floatfmt=".3f"), ""]
    return "\n".join(parts)
