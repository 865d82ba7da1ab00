"""Hyper-parameter search on validation data only, with the same budget for every method (Optuna).

Each method's space covers the range its paper and reference code use (SPACES; docs/TUNING.md gives each range's
source). Optuna's TPE sampler, seeded per method, proposes `trials` configurations, the preset's defaults first; each
trains with `stream.evaluate_on=val` -- the test data is never loaded -- on every tuning seed, each seed with its own
split and backbone as compare's seeds have (compare.seed_overrides). The score is the validation average accuracy
after the last task, mean of both settings and of the seeds. A median pruner stops a configuration whose running
estimate of that score after a task (the earlier seeds' final scores with this seed's accuracy so far) falls below
the median of the earlier configurations at the same point; the first half of each seed's tasks, which reward
plasticity alone, are never judged. A winner within the outer tenth of a numeric range widens that range (a decade for
a log range, its width for a linear one, up to the parameter's hard limits) and the search goes on for `extra`
trials in the widened space, until no winner sits at an edge or `rounds` widenings are spent; the table says so.
The winners ship in tuned.yaml beside this file; `mmcl-lab compare` uses them.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .compare import VARY, seed_overrides
from .config import ConfigError, RunConfig, apply_overrides, method_settings
from .run import prepared, run_stream
from .utils import atomic_write_text, digest

EDGE = 0.1  # a winner in the outer tenth of a numeric range (in log space for a log range) sits at its edge


@dataclass(frozen=True)
class Range:
    """One knob's search range: floats or integers, on a log or linear scale, within hard limits a widening never
    crosses (a learning rate stays positive, a ratio at most 1, a count at least 1)."""

    low: float
    high: float
    log: bool = True
    integer: bool = False
    floor: float = 0.0  # hard limits of the parameter itself
    ceiling: float = math.inf
    source: str = ""  # where the range comes from (docs/TUNING.md)

    def suggest(self, trial, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def at_edge(self, value: float) -> str | None:
        """'low' or 'high' when value sits in the outer EDGE of the range on that side (a side already at its hard
        limit cannot widen, so it never counts), else None."""
        scale = (lambda v: math.log(v)) if self.log else (lambda v: v)
        span = scale(self.high) - scale(self.low)
        if span <= 0:
            return None
        where = (scale(value) - scale(self.low)) / span
        if where <= EDGE and self.low > self.floor:
            return "low"
        if where >= 1 - EDGE and self.high < self.ceiling:
            return "high"
        return None

    def widened(self, side: str) -> Range:
        """The range grown on one side: a decade for a log range, its own width for a linear one, within limits."""
        if side == "low":
            low = self.low / 10 if self.log else self.low - (self.high - self.low)
            return replace(self, low=max(low, self.floor) if not self.integer else max(math.floor(low), self.floor))
        high = self.high * 10 if self.log else self.high + (self.high - self.low)
        return replace(self, high=min(high, self.ceiling) if not self.integer else min(math.ceil(high), self.ceiling))

    def __str__(self) -> str:
        kind = "int" if self.integer else "float"
        return f"{kind} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


LR = Range(1e-4, 1e-2, floor=1e-7, source="AdamW learning rates of fine-tuned heads")
PROMPT_LR = Range(3e-4, 1e-1, floor=1e-7, source="prompt tuning trains few parameters at higher rates (VPT, L2P)")
EPOCHS = Range(2, 10, log=False, integer=True, floor=1, source="the preset's 6, either way")
COMMON = {"train.lr": LR, "train.epochs": EPOCHS}
SPACES: dict[str, dict[str, Range]] = {
    "finetune": {},
    "joint": {},
    "ewc": {"method.params.lam": Range(1e-1, 1e5, floor=1e-6, source="several decades around the 1e2-1e4 of "
                                                                   "EWC's and Avalanche's examples")},
    "lwf": {"method.params.alpha": Range(0.1, 10.0, floor=1e-4, source="LwF's lambda_o = 1, a decade either way"),
            "method.params.temperature": Range(1.0, 8.0, floor=0.1, source="LwF's T = 2 (Hinton et al.'s range)")},
    "er": {"method.params.replay_batch": Range(8, 128, integer=True, floor=1,
                                               source="replay batches of 10-64 in Chaudhry et al. 2019")},
    "l2p": {"train.lr": PROMPT_LR,
            "method.params.pool_size": Range(5, 30, log=False, integer=True, floor=2, source="L2P's M = 10"),
            "method.params.prompt_length": Range(1, 10, log=False, integer=True, floor=1, source="L2P's L_p = 5"),
            "method.params.pull": Range(0.01, 1.0, floor=1e-4, source="L2P's lambda = 0.1 (surrogate loss)")},
    "zscl": {"method.params.alpha": Range(0.1, 10.0, floor=1e-4, source="ZSCL's loss weights of 1, a decade either "
                                                                        "way"),
             "method.params.ensemble_every": Range(2, 50, integer=True, floor=1, source="ZSCL's avg_freq 100 of "
                                                                                       "1000 iterations a task")},
    "slca": {"method.params.lr_scale": Range(1e-4, 1.0, floor=1e-6, ceiling=1.0,
                                             source="SLCA's 100x slow learner (ratio 0.01) and 1e-3 beyond")},
    "comm": {"train.lr": PROMPT_LR,
             "method.params.lambda_sr": Range(0.1, 100.0, floor=1e-4, source="reconstruction (COMM.md 3): no "
                                                                             "published value; three decades"),
             "method.params.prompt_length": Range(1, 8, log=False, integer=True, floor=1,
                                                  source="reconstruction: L2P's and VPT's 1-10 tokens")},
}
# Kept out of every space on purpose: ER's memory_size is the memory budget the comparison matches across methods
# (and sweeps on its own, RESULTS.md), not a knob to tune; validation would simply pick the largest allowed.


def space_of(method: str) -> dict[str, Range]:
    """method's full search space: the common knobs, then its own (which may override them)."""
    return {**COMMON, **SPACES[method]}


def effective(cfg: RunConfig, method: str) -> dict[str, Any]:
    """The values cfg gives to every knob in method's search space (defaults included)."""
    params = method_settings(cfg.method)
    out = {}
    for key in space_of(method):
        section, _, name = key.rpartition(".")
        out[key] = getattr(params, name) if section == "method.params" else getattr(getattr(cfg, section), name)
    return out


def tune(cfg: RunConfig, methods: list[str], trials: int, out_dir: str | Path, seeds: tuple[int, ...] = (0, 1),
         extra: int = 4, rounds: int = 2, vary: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Search every method's space on validation data (`trials` configurations each, then `extra` more per
    widening round); write search.csv (every configuration, round and seed score), curves.csv (best so far after
    each configuration) and the winners as tuned.yaml in out_dir. The defaults of `extra` and `rounds` are the
    documented budget (docs/TUNING.md), the same as the CLI's. Resumable: finished configurations are kept in
    out_dir's Optuna journal and their runs in out_dir/<method>/trial_<n>."""
    import optuna

    unknown = [m for m in methods if m not in SPACES]
    if unknown:  # before any stream is built or any run written
        raise ConfigError(f"--methods: no search space for {unknown}; choose from {', '.join(SPACES)}")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1 configuration per method, got {trials}")
    vary = VARY if vary is None else vary
    seed_overrides(cfg, 0, vary)  # an unknown --vary fails here, before anything is written
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.log")))
    base = apply_overrides(cfg, {"stream.evaluate_on": "val", "train.progress": False})
    rows, curves, widenings, winners, shared = [], [], [], {}, {}  # shared: streams and backbones, built once
    for method in methods:
        space = space_of(method)
        defaults = effective(apply_overrides(base, {"method.name": method}), method)
        done: list = []  # finished trials of earlier rounds, which each later round's sampler learns from
        for round_ in range(rounds + 1):
            study = optuna.create_study(
                study_name=f"{method}-round{round_}-{digest(repr(sorted(space.items())), 8)}", storage=storage,
                direction="maximize", load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=int(digest(method, 8), 16), n_startup_trials=4),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=4))
            if not study.trials:
                for trial in done:
                    study.add_trial(trial)
                if round_ == 0:
                    study.enqueue_trial(defaults)  # the preset's own settings are always tried
            budget = trials if round_ == 0 else extra
            left = budget - sum(t.number >= len(done) for t in study.trials if t.state.is_finished())
            if left > 0:
                study.optimize(_objective(base, method, space, seeds, vary, out, shared),
                               n_trials=left)
            done = [t for t in study.trials if t.state.is_finished()]
            best = study.best_trial
            edges = {k: r.at_edge(best.params[k]) for k, r in space.items()}
            edges = {k: side for k, side in edges.items() if side}
            if not edges or round_ == rounds:
                widenings += [dict(method=method, round=round_, param=k, side=side, widened_to="no rounds left")
                              for k, side in edges.items()]
                break
            for k, side in edges.items():
                space = {**space, k: space[k].widened(side)}
                widenings.append(dict(method=method, round=round_, param=k, side=side, widened_to=str(space[k])))
        rows += _rows(method, done)
        curves += _curve(method, done)
        winners[method] = dict(sorted(best.params.items()))
        # written after every method, so a long search that stops early keeps the tables of the methods it finished
        atomic_write_text(out / "search.csv", pd.DataFrame(rows).to_csv(index=False))
        atomic_write_text(out / "curves.csv", pd.DataFrame(curves).to_csv(index=False))
        atomic_write_text(out / "widened.csv", pd.DataFrame(widenings, columns=["method", "round", "param", "side",
                                                                                "widened_to"]).to_csv(index=False))
        atomic_write_text(out / "tuned.yaml", yaml.safe_dump(winners, sort_keys=True))
    return pd.DataFrame(rows)


def _objective(base: RunConfig, method: str, space: dict[str, Range], seeds: tuple[int, ...],
               vary: tuple[str, ...], out: Path, shared: dict):
    """The Optuna objective: validation average accuracy after the last task, mean of both settings and the seeds.
    After each task of the second half of a seed's stream, the running estimate of that score is reported, so the
    pruner can stop the configuration: the earlier seeds' final scores with this seed's accuracy so far."""
    import optuna

    def objective(trial) -> float:
        params = {k: r.suggest(trial, k) for k, r in space.items()}
        cfg = apply_overrides(base, {"method.name": method, **params})
        scores: list[float] = []
        for i, seed in enumerate(seeds):
            run_cfg = apply_overrides(cfg, seed_overrides(cfg, seed, vary))
            stream, backbone = prepared(run_cfg, shared)

            def after(task: int, results: pd.DataFrame, i: int = i, seed: int = seed, tasks: int = len(stream)):
                # Early tasks reward plasticity alone (the most plastic setting leads until forgetting sets in), on
                # every seed: a configuration is judged on the second half of each stream only.
                if task < tasks // 2:
                    return
                trial.report(float(np.mean([*scores, _score(results, task)])), step=i * tasks + task)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation curve below the median after task {task}, seed {seed}")

            run = run_stream(run_cfg, out / method / f"trial_{trial.number}" / f"seed_{seed}", stream,
                             backbone=backbone, on_task=after)
            shutil.rmtree(run.path / "checkpoints")  # a scored run is never resumed: its results are what counts
            scores.append(_score(run.results()))
            trial.set_user_attr(f"seed_{seed}", scores[-1])
        return float(np.mean(scores))

    return objective


def _score(results: pd.DataFrame, step: int | None = None) -> float:
    """Mean accuracy, right after step (default: the last), over the tasks trained by then, mean of the settings:
    after the last step this is the average accuracy (metrics.average_accuracy)."""
    step = int(results.step.max()) if step is None else step
    rows = results[(results.step == step) & (results.metric == "acc") & (results.task <= step)]
    return float(rows.groupby("setting").value.mean().mean())


def _final(trial) -> float | None:
    """A trial's score: its value if it ran to the end. Optuna gives a pruned trial the last running value it
    reported as its value, an accuracy after an early task, which is no score to rank or plot."""
    return trial.value if trial.state.name == "COMPLETE" else None


def _rows(method: str, trials: list) -> list[dict]:
    return [dict(method=method, trial=t.number, state=t.state.name.lower(), val_avg_acc=_final(t),
                 pruned_at_step=t.last_step if t.state.name == "PRUNED" else None,
                 **{k: v for k, v in t.user_attrs.items() if k.startswith("seed_")}, **t.params) for t in trials]


def _curve(method: str, trials: list) -> list[dict]:
    """The best validation score after each configuration tried, in order (pruned ones count as tried)."""
    best, out = -math.inf, []
    for t in sorted(trials, key=lambda t: t.number):
        if _final(t) is not None:
            best = max(best, _final(t))
        out.append(dict(method=method, trial=t.number + 1, best_so_far=None if best == -math.inf else best))
    return out
