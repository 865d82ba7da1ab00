"""Continual-learning metrics as pure functions of the accuracy matrix R[step, task].

R has one row per training step t = 0..T-1 (after training task t) and one column per task j; task j is
trained at step j. `init` is the row measured before any training (step -1). `tasks` restricts a metric
to a subset of columns (e.g. the tasks of one modality); every formula keeps its meaning on a subset.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def _cols(R: np.ndarray, tasks: Sequence[int] | None) -> list[int]:
    return list(range(R.shape[1])) if tasks is None else list(tasks)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def average_accuracy(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """A_T = mean over tasks j of R[T-1, j] (Chaudhry et al. 2018): accuracy after the last step."""
    return _mean([R[-1, j] for j in _cols(R, tasks)])


def last_accuracy(R: np.ndarray, n_test: Sequence[int], tasks: Sequence[int] | None = None) -> float:
    """Sample-weighted accuracy after the last step: sum_j n_j R[T-1, j] / sum_j n_j (as in L2P, SLCA)."""
    cols = _cols(R, tasks)
    weights = np.array([n_test[j] for j in cols], dtype=float)
    return float(np.dot(weights, [R[-1, j] for j in cols]) / weights.sum()) if cols else float("nan")


def average_incremental_accuracy(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """AIA = mean over steps t of (mean over trained tasks j <= t of R[t, j]) (Rebuffi et al. 2017)."""
    cols = _cols(R, tasks)
    per_step = [_mean([R[t, j] for j in cols if j <= t]) for t in range(R.shape[0])]
    return _mean([a for a in per_step if not np.isnan(a)])


def forgetting(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """F = mean over j < T-1 of (max over t in [j, T-2] of R[t, j]) - R[T-1, j] (Chaudhry et al. 2018)."""
    T = R.shape[0]
    return _mean([R[j:T - 1, j].max() - R[-1, j] for j in _cols(R, tasks) if j < T - 1])


def backward_transfer(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """BWT = mean over j < T-1 of R[T-1, j] - R[j, j] (Lopez-Paz & Ranzato 2017); negative = forgetting."""
    T = R.shape[0]
    return _mean([R[-1, j] - R[j, j] for j in _cols(R, tasks) if j < T - 1])


def forward_transfer(R: np.ndarray, init: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """FWT = mean over j >= 1 of R[j-1, j] - init[j]: zero-shot accuracy on task j just before it is
    trained, relative to the untrained model (Lopez-Paz & Ranzato 2017)."""
    return _mean([R[j - 1, j] - init[j] for j in _cols(R, tasks) if j >= 1])


def label_growth(R: np.ndarray, final_space: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """G = mean over j < T-1 of R[j, j] - final_space[j]: how much task j's accuracy right after training
    drops only because the label space grows to its final size (the same model, more classes to choose
    from). A never-trained model has BWT = -G exactly; BWT + G is the forgetting that growth does not explain."""
    T = R.shape[0]
    return _mean([R[j, j] - final_space[j] for j in _cols(R, tasks) if j < T - 1])


def zscl_transfer(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """ZSCL's Transfer (Zheng et al. 2023, MTIL): mean over tasks i >= 1 of (mean over steps j < i of R[j, i]), the
    zero-shot accuracy on a task before it is trained, averaged over every earlier step. The first task has no
    such step and is left out; the untrained model (step -1) is not used."""
    return _mean([float(np.mean(R[:i, i])) for i in _cols(R, tasks) if i >= 1])


def zscl_avg(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """ZSCL's Avg: the mean of R over every step and every task, trained or not."""
    return _mean([float(np.mean(R[:, j])) for j in _cols(R, tasks)])


def zscl_last(R: np.ndarray, tasks: Sequence[int] | None = None) -> float:
    """ZSCL's Last: the mean of the last row, the same number as average_accuracy (kept under ZSCL's name)."""
    return average_accuracy(R, tasks)


def accuracy_matrix(results: pd.DataFrame, setting: str = "known") -> tuple[np.ndarray, np.ndarray]:
    """(R, init) from the tidy results table: R is (steps, tasks), init the step -1 row."""
    acc = results[(results.metric == "acc") & (results.setting == setting)]
    if acc.empty:
        raise ValueError(f"no accuracy rows for setting {setting!r}; present: {sorted(results.setting.unique())}")
    table = acc.pivot_table(index="step", columns="task", values="value", aggfunc="first").sort_index()
    init = table.loc[-1].to_numpy() if -1 in table.index else np.full(table.shape[1], np.nan)
    return table.drop(index=-1, errors="ignore").to_numpy(), init


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric per setting, over all tasks and per modality (one row each)."""
    rows = []
    for setting in sorted(results.setting.unique()):
        R, init = accuracy_matrix(results, setting)
        if R.shape[0] < R.shape[1]:
            continue  # an unfinished run: metrics need a square matrix
        first = results[(results.setting == setting) & (results.step == results.step.max()) & (results.metric == "acc")]
        first = first.sort_values("task")
        diag = results[(results.setting == setting) & (results.metric == "acc_final_space")]
        final_space = diag.set_index("task").value.reindex(range(R.shape[1])).to_numpy()
        n_test, modality = first.n.to_numpy(), first.modality.to_numpy()
        groups = {"all": None, **{m: np.flatnonzero(modality == m).tolist() for m in dict.fromkeys(modality)}}
        for name, cols in groups.items():
            rows.append(dict(setting=setting, modality=name,
                             avg_acc=average_accuracy(R, cols), last_acc=last_accuracy(R, n_test, cols),
                             avg_inc_acc=average_incremental_accuracy(R, cols),
                             forgetting=forgetting(R, cols), bwt=backward_transfer(R, cols),
                             growth=label_growth(R, final_space, cols), fwt=forward_transfer(R, init, cols),
                             zscl_transfer=zscl_transfer(R, cols), zscl_avg=zscl_avg(R, cols),
                             zscl_last=zscl_last(R, cols)))
    return pd.DataFrame(rows)
