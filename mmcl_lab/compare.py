"""Several methods x seeds on one stream: a table of mean and std per metric, as CSV, Markdown and LaTeX."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .config import ConfigError, RunConfig, apply_overrides, tuned_overrides
from .latex import best_mask, booktabs, number
from .metrics import summary
from .registry import METHODS
from .retrieval import wide
from .run import Run, run_many
from .utils import atomic_write_text

ABLATIONS = {  # COMM with one component switched off at a time
    "comm -prompts": {"prompt_depth": 0},  # re-alignment only: the frozen backbone plus the A_m maps
    "comm zero prompts": {"train_prompts": False},  # prompt tokens present but never trained: their shift alone
    "comm -self_reg": {"self_reg": "off"},
    "comm -relevance (uniform blend)": {"relevance": "off"},
    "comm oracle router": {"relevance": "oracle"},
    "comm -realign": {"realign": "off"},
}
MEMORY_VARIANTS = {  # kept memory swept: ER's buffer size, COMM's and SLCA's statistics
    **{f"er m={m}": ("er", {"memory_size": m}) for m in (50, 100, 400, 800)},
    "comm lowrank-8": ("comm", {"covariance": "lowrank", "covariance_rank": 8}),
    "comm diag": ("comm", {"covariance": "diag"}),
    "comm diag, 2 classes/task": ("comm", {"covariance": "diag", "stat_classes_per_task": 2}),
    "slca lowrank-8": ("slca", {"covariance": "lowrank"}),
    "slca diag": ("slca", {"covariance": "diag"}),
}
MAIN_METRICS = ["avg_acc", "last_acc", "avg_inc_acc", "forgetting", "bwt", "growth", "fwt"]
ZSCL_METRICS = ["zscl_transfer", "zscl_avg", "zscl_last"]  # ZSCL's Transfer / Avg / Last (metrics.py)
METRICS = MAIN_METRICS + ZSCL_METRICS


def variants(methods: list[str] | None, ablation: bool) -> dict[str, tuple[str, dict]]:
    """Label -> (method name, params) for every run to make."""
    names = methods or METHODS.names()
    out = {name: (name, {}) for name in names}
    if ablation:
        out |= {label: ("comm", params) for label, params in ABLATIONS.items()}
    return out


VARY = ("split", "backbone")  # what a seed may vary beyond the run's own randomness (seed_overrides)


def seed_overrides(cfg: RunConfig, seed: int, vary: tuple[str, ...] = VARY) -> dict:
    """The overrides of one seed of a study: the run seed (every random choice of the method), and, as vary asks,
    the train/validation/test split (data.vary_split) and the backbone (pretrain.seed + seed: its corpus draw,
    initialisation and batch order). Seed 0 with the default pretrain.seed and data.seed is the preset itself."""
    unknown = set(vary) - set(VARY)
    if unknown:
        raise ConfigError(f"--vary: unknown {sorted(unknown)}; choose from {', '.join(VARY)} (or none)")
    out: dict = {"seed": seed}
    if "split" in vary:
        out["data.vary_split"] = True
    if "backbone" in vary:
        out["pretrain.seed"] = cfg.pretrain.seed + seed
    return out


def study(cfg: RunConfig, methods: list[str] | None, seeds: list[int], out_dir: str | Path,
          ablation: bool = False, tuned: bool = False, extra: dict[str, tuple[str, dict]] | None = None,
          vary: tuple[str, ...] = VARY) -> Iterator[tuple[str, int, Run]]:
    """Every variant for every seed, trained or resumed in out_dir/<label>/seed_<n> (a finished run is read, not
    trained again): (label, seed, run) as each is ready. tuned=True starts each method from its shipped
    validation-tuned settings (tune.py); `extra` adds labelled variants (label -> (method, params)); vary: what each
    seed varies besides the run's own randomness (seed_overrides). Notebooks share runs through it: the same
    method, seed and settings in the same out_dir is the same run."""
    for name in methods or ():
        if name not in METHODS:  # an unknown name fails before any stream is built or any run written
            raise ConfigError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS.names())}")
    out = Path(out_dir)
    labels, jobs = [], []
    for seed in seeds:
        for label, (name, params) in {**variants(methods, ablation), **(extra or {})}.items():
            run_cfg = apply_overrides(cfg, {**seed_overrides(cfg, seed, vary), "method.name": name,
                                            "train.progress": False, **(tuned_overrides(name) if tuned else {})})
            run_dir = out / label.replace(" ", "_") / f"seed_{seed}"
            run_cfg = apply_overrides(run_cfg, {**{f"method.params.{k}": v for k, v in params.items()},
                                                "out_dir": str(run_dir)})
            labels.append((label, seed))
            jobs.append((run_cfg, run_dir))
    for (label, seed), run in zip(labels, run_many(jobs, "compare")):
        yield label, seed, run


def compare(cfg: RunConfig, methods: list[str] | None, seeds: list[int], out_dir: str | Path,
            ablation: bool = False, tuned: bool = False, extra: dict[str, tuple[str, dict]] | None = None,
            vary: tuple[str, ...] = VARY) -> str:
    """The study's runs (study()), then comparison.{csv,md,tex} and the per-run table runs.csv (whose results_csv
    column names the file each row's numbers came from) in out_dir; returns the Markdown, which intervals over seeds
    cover the run seed and what vary names."""
    out = Path(out_dir)
    rows, found = [], []
    for label, seed, run in study(cfg, methods, seeds, out, ablation, tuned, extra, vary):
        rows.append(summary(run.results()).assign(method=label, seed=seed, memory_MB=run.memory_bytes() / 2**20,
                                                  results_csv=str(run.path / "results.csv")))
        last = run.retrieval()
        found.append(last[last.step == last.step.max()].assign(method=label, seed=seed))
    per_run = pd.concat(rows, ignore_index=True)
    atomic_write_text(out / "runs.csv", per_run.to_csv(index=False))
    last_retrieval = pd.concat(found, ignore_index=True)
    atomic_write_text(out / "retrieval.csv", last_retrieval.to_csv(index=False))
    table = aggregate(per_run)
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    md = to_markdown(table, paired_tests(per_run), vary) + retrieval_markdown(last_retrieval)
    atomic_write_text(out / "comparison.md", md)
    atomic_write_text(out / "comparison.tex", to_latex(table, sources=[str(out / "comparison.csv"),
                                                                          f"{out / 'runs.csv'} (column results_csv)"]))
    return md


def aggregate(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and the half-width of a 95% t-interval over seeds of every metric per
    (method, setting, modality)."""
    from scipy import stats  # here, not at the top: a plain `mmcl-lab run` never pays its import (0.5 s)

    grouped = per_run.groupby(["method", "setting", "modality"], sort=False)
    n = grouped.size()
    std = grouped[METRICS].std(ddof=1)
    half = std.mul(stats.t.ppf(0.975, (n - 1).clip(lower=1)) / np.sqrt(n), axis=0)
    table = grouped[METRICS].mean().join(std, rsuffix="_std").join(half, rsuffix="_ci95")
    return table.assign(memory_MB=grouped.memory_MB.mean(), seeds=n).reset_index()


def paired_tests(per_run: pd.DataFrame, reference: str = "comm", metric: str = "avg_acc") -> pd.DataFrame:
    """Paired t-test over seeds of reference against every other method, per setting (all tasks): the
    mean difference (reference - other) and its two-sided p-value."""
    from scipy import stats

    rows = []
    data = per_run[per_run.modality == "all"]
    for setting in data.setting.unique():
        ref = data[(data.setting == setting) & (data.method == reference)].set_index("seed")[metric]
        for method in data.method.unique():
            other = data[(data.setting == setting) & (data.method == method)].set_index("seed")[metric]
            seeds = ref.index.intersection(other.index)
            if method == reference or len(seeds) < 2:
                continue
            diff = ref[seeds] - other[seeds]
            p = stats.ttest_rel(ref[seeds], other[seeds]).pvalue if diff.std() > 0 else float("nan")
            rows.append(dict(setting=setting, method=method, diff=diff.mean(), p=p, seeds=len(seeds)))
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, tests: pd.DataFrame | None = None, vary: tuple[str, ...] = ()) -> str:
    """Per setting: a table over all tasks (mean ± 95% CI half-width), per-modality average accuracy, and
    the paired tests of COMM against each method; each heading says which sources of variance the seeds cover."""
    parts = []
    for setting in table.setting.unique():
        t = table[(table.setting == setting) & (table.modality == "all")]
        cells = t[["method"]].copy()
        for m in MAIN_METRICS:
            cells[m] = [f"{a:.3f} ± {h:.3f}" if np.isfinite(h) else f"{a:.3f}" for a, h in zip(t[m], t[f"{m}_ci95"])]
        cells["kept MB"] = t.memory_MB.round(2).to_numpy()
        covers = ", ".join(["run", *(v for v in VARY if v in vary)])
        spread = (f"mean ± 95% CI half-width over {t.seeds.max()} seeds varying {covers}, sample std"
                  if t.seeds.max() > 1 else "one seed, so no interval")
        parts += [f"### modality {setting} at test time (all tasks; {spread})", "", cells.to_markdown(index=False), ""]
        per_mod = table[(table.setting == setting) & (table.modality != "all")]
        pivot = per_mod.pivot(index="method", columns="modality", values="avg_acc").reindex(t.method)
        parts += [f"average accuracy per modality ({setting})", "", pivot.to_markdown(floatfmt=".3f"), ""]
        zscl = t[["method"]].assign(**{m.removeprefix("zscl_"): t[m].round(3) for m in ZSCL_METRICS})
        parts += [f"ZSCL's Transfer / Avg / Last, mean over seeds ({setting}; Last is avg_acc)", "",
                  zscl.to_markdown(index=False, floatfmt=".3f"), ""]
        if tests is not None and len(tests):
            pt = tests[tests.setting == setting].drop(columns="setting")
            parts += [f"COMM minus each method, average accuracy, paired t-test over seeds ({setting})", "",
                      pt.to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(parts)


def retrieval_markdown(last: pd.DataFrame) -> str:
    """Per setting: Recall@1/5 and mAP both ways after the last task, averaged over modalities, then seeds."""
    if last.empty:
        return ""
    parts = []
    mean = (last.groupby(["setting", "method", "seed", "direction", "metric"], sort=False).value.mean()
            .groupby(["setting", "method", "direction", "metric"], sort=False).mean().reset_index())
    for setting, part in mean.groupby("setting", sort=False):
        parts += [f"retrieval after the last task ({setting}; mean over modalities, then seeds; retrieval.csv)", "",
                  wide(part, ["method"], ("R@1", "R@5", "mAP")).to_markdown(floatfmt=".3f"), ""]
    return "\n".join(["", *parts])


def to_latex(table: pd.DataFrame, sources: list[str]) -> str:
    """Per setting, one booktabs table over all tasks: mean ± 95% CI half-width of every metric, ZSCL's three
    included, with the best value per column in bold (growth, which is neither good nor bad, never is)."""
    parts = []
    for setting in table.setting.unique():
        t = table[(table.setting == setting) & (table.modality == "all")].reset_index(drop=True)
        cells = pd.DataFrame({"method": t.method})
        for m in METRICS:
            cells[m] = [number(a, h) for a, h in zip(t[m], t[f"{m}_ci95"])]
        bold = best_mask(t[METRICS]).assign(method=False)
        headers = {m: m.replace("zscl_", "ZSCL ").replace("_", " ") for m in METRICS}
        spread = f"mean $\\pm$ 95\\% CI half-width over {t.seeds.max()} seeds" if t.seeds.max() > 1 else "one seed"
        parts.append(booktabs(cells.rename(columns=headers), bold.rename(columns=headers),
                              caption=f"Modality {setting} at test time, all tasks ({spread}); best in bold.",
                              label=f"tab:compare-{setting}", sources=sources))
    return "\n".join(parts)
