"""Plotly figures and ipywidgets controls over a run directory: accuracy, drift, modality bias, re-alignment.

Every figure reads only from the run directory. Without a live kernel (or with MMCL_STATIC=1) the drift
explorer is a static figure with animation frames and a step slider, which also renders in exported HTML.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import probe
from .metrics import accuracy_matrix
from .run import Run
from .utils import atomic_write_bytes

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC", "#EECA3B"]


def accuracy_heatmap(run: Run, setting: str = "known") -> go.Figure:
    """R[step, task] as a heatmap, with the untrained model as the first row."""
    results = run.results()
    R, init = accuracy_matrix(results, setting)
    tasks = results[results.step == -1].drop_duplicates("task").sort_values("task")
    cols = [f"{t}:{m}" for t, m in zip(tasks.task, tasks.modality)]
    rows = ["init"] + [f"after {c}" for c in cols[: len(R)]]
    z = np.vstack([init, R])
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, zmin=0, zmax=1, colorscale="Viridis",
                               text=np.round(z, 2), texttemplate="%{text}", colorbar=dict(title="acc")))
    fig.update_layout(title=f"Accuracy R[step, task] (modality {setting} at test time)",
                      xaxis_title="evaluated task", yaxis_title="after training", yaxis_autorange="reversed",
                      height=120 + 32 * len(rows))
    return fig


def project(run: Run, kind: str = "known", method: str | None = None, seed: int = 0) -> dict[int, np.ndarray]:
    """2-D coordinates of the probe set per step from ONE fit over all steps (comparable coordinates);
    cached in the run directory."""
    method = method or run.config().probe.projection
    snaps = run.probes()
    steps = sorted(snaps)
    stacked = np.concatenate([snaps[s][kind].numpy() for s in steps])  # (S * N, E)
    key = hashlib.sha256(stacked.tobytes() + method.encode() + bytes([seed])).hexdigest()[:16]
    path = run.path / "probes" / f"projection_{kind}_{method}_{key}.npy"
    if path.exists():
        coords = np.load(path, allow_pickle=False)
    else:
        coords = _fit_2d(stacked, method, seed)
        buf = io.BytesIO()
        np.save(buf, coords)
        atomic_write_bytes(path, buf.getvalue())
    n = len(stacked) // len(steps)
    return {s: coords[i * n:(i + 1) * n] for i, s in enumerate(steps)}


def _fit_2d(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    import umap  # imported lazily: numba compilation costs ~20 s on first use
    return umap.UMAP(n_components=2, n_neighbors=15, random_state=seed, n_epochs=200).fit_transform(x)


def _probe_frame(run: Run, coords: dict[int, np.ndarray]) -> pd.DataFrame:
    meta = run.probe_meta()
    names = np.array(meta["class_names"])
    frames = []
    for step, xy in coords.items():
        frames.append(pd.DataFrame({"step": step, "x": xy[:, 0], "y": xy[:, 1], "modality": meta["modality"],
                                    "class": names[meta["label"]], "task": [f"task {t}" for t in meta["task"]],
                                    "sample": meta["sample"]}))
    return pd.concat(frames, ignore_index=True)


def _scatter(df: pd.DataFrame, color: str) -> list[go.Scattergl]:
    traces = []
    for i, (group, part) in enumerate(df.groupby(color, sort=False)):
        traces.append(go.Scattergl(
            x=part.x, y=part.y, mode="markers", name=str(group), marker=dict(size=6, color=PALETTE[i % 10]),
            customdata=part[["class", "sample", "modality", "task"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]}, %{customdata[3]}<extra></extra>"))
    return traces


def _trajectories(df: pd.DataFrame, upto: int) -> list[go.Scatter]:
    """Each modality's centroid over steps -1..upto: a line of stars in the modality's colour."""
    colour = {m: PALETTE[i % 10] for i, m in enumerate(dict.fromkeys(df.modality))}
    cent = df[df.step <= upto].groupby(["modality", "step"], sort=False)[["x", "y"]].mean().reset_index()
    return [go.Scatter(x=p.x, y=p.y, mode="lines+markers", name=f"{m} centroid", showlegend=False,
                       line=dict(color=colour[m], width=1.5),
                       marker=dict(symbol="star", size=10, color=colour[m], line=dict(color="black", width=1)),
                       hovertext=[f"{m} centroid after step {s}" for s in p.step], hoverinfo="text")
            for m, p in cent.groupby("modality", sort=False)]


def drift_figure(run: Run, kind: str = "known", color: str = "modality", method: str | None = None) -> go.Figure:
    """Static drift explorer: one animation frame per step, a step slider, centroid trajectories."""
    df = _probe_frame(run, project(run, kind, method))
    steps = sorted(df.step.unique())
    frames = [go.Frame(name=str(s), data=_scatter(df[df.step == s], color) + _trajectories(df, s)) for s in steps]
    fig = go.Figure(data=frames[-1].data, frames=frames)  # opens on the last step
    fig.update_layout(
        title=f"Probe embeddings ({kind}), coloured by {color}: one projection fitted over all steps",
        height=560, xaxis=dict(range=_span(df.x)), yaxis=dict(range=_span(df.y)),
        sliders=[dict(active=len(steps) - 1, currentvalue=dict(prefix="after step "), steps=[
            dict(label=str(s), method="animate", args=[[str(s)], dict(mode="immediate", frame=dict(duration=0))])
            for s in steps])],
        updatemenus=[dict(type="buttons", x=0, y=-0.12, buttons=[dict(label="play", method="animate", args=[None])])])
    return fig


def _span(v: pd.Series) -> list[float]:
    pad = 0.05 * float(v.max() - v.min() or 1)
    return [float(v.min()) - pad, float(v.max()) + pad]


def drift_explorer(run: Run, kind: str = "known", method: str | None = None, interactive: bool | None = None):
    """The drift explorer: a FigureWidget with a task slider and a colour-by menu in a live kernel,
    else the static animated figure."""
    if interactive is None:
        interactive = "ipykernel" in sys.modules and not os.environ.get("MMCL_STATIC")
    if not interactive:
        return drift_figure(run, kind, "modality", method)
    import ipywidgets as W

    df = _probe_frame(run, project(run, kind, method))
    steps = sorted(df.step.unique())
    fig = go.FigureWidget(layout=dict(height=560, xaxis=dict(range=_span(df.x)), yaxis=dict(range=_span(df.y)),
                                      title=f"Probe embeddings ({kind})"))
    slider = W.SelectionSlider(options=steps, value=steps[-1], description="after step")
    colour = W.Dropdown(options=["modality", "class", "task"], value="modality", description="colour by")

    def redraw(*_):
        with fig.batch_update():
            fig.data = []
            for trace in _scatter(df[df.step == slider.value], colour.value) + _trajectories(df, slider.value):
                fig.add_trace(trace)

    slider.observe(redraw, "value")
    colour.observe(redraw, "value")
    redraw()
    return W.VBox([W.HBox([slider, colour]), fig])


def drift_curves(run: Run, kind: str = "known") -> go.Figure:
    """Per step: linear CKA and kNN overlap to the step before, and each modality's centroid drift."""
    snaps, meta = run.probes(), run.probe_meta()
    modality = np.array(meta["modality"])
    steps = sorted(snaps)
    rows = []
    for prev, step in zip(steps, steps[1:]):
        a, b = snaps[prev][kind].numpy(), snaps[step][kind].numpy()
        drift = probe.centroid_drift(a, b, modality)
        rows.append({"step": step, "CKA to previous": probe.linear_cka(a, b),
                     "kNN overlap to previous": probe.knn_overlap(a, b), **{f"drift {m}": d for m, d in drift.items()}})
    df = pd.DataFrame(rows)
    fig = go.Figure([go.Scatter(x=df.step, y=df[c], mode="lines+markers", name=c) for c in df.columns if c != "step"])
    fig.update_layout(title=f"How much the probe embeddings ({kind}) move at each step", xaxis_title="step",
                      height=420)
    return fig


def modality_gap_plot(run: Run, kind: str = "agnostic") -> go.Figure:
    """Distance of each modality's probe centroid to its class-text centroid, per step."""
    snaps, meta = run.probes(), run.probe_meta()
    modality, cm = np.array(meta["modality"]), np.array(meta["class_modality"])
    rows = [{"step": s, "modality": m, "gap": g}
            for s, t in sorted(snaps.items())
            for m, g in probe.modality_gap(t[kind].numpy(), modality, t["text"].numpy(), cm)["to_text"].items()]
    df = pd.DataFrame(rows)
    fig = go.Figure([go.Scatter(x=p.step, y=p.gap, mode="lines+markers", name=m) for m, p in df.groupby("modality")])
    fig.update_layout(title=f"Modality gap: ||centroid(modality) - centroid(its class texts)|| ({kind})",
                      xaxis_title="step", yaxis_title="distance", height=400)
    return fig


def bias_panel(run: Run) -> go.Figure:
    """Accuracy per modality over steps, with and without the modality identity: the gap is modality bias."""
    res = run.results()
    res = res[(res.metric == "acc") & (res.step >= 0) & (res.task <= res.step)]
    df = res.groupby(["setting", "modality", "step"])["value"].mean().reset_index()
    fig = go.Figure()
    for i, (m, part) in enumerate(df.groupby("modality")):
        for setting, dash in (("known", "solid"), ("agnostic", "dot")):
            p = part[part.setting == setting]
            fig.add_trace(go.Scatter(x=p.step, y=p.value, name=f"{m} ({setting})", mode="lines+markers",
                                     line=dict(color=PALETTE[i], dash=dash)))
    fig.update_layout(title="Accuracy on seen tasks per modality: known (solid) vs hidden (dotted) modality",
                      xaxis_title="step", yaxis_title="accuracy", yaxis_range=[0, 1], height=420)
    return fig


def realignment_plot(run: Run, step: int | None = None) -> go.Figure:
    """Per-modality probe accuracy and gap to text before vs after the re-alignment stage at step."""
    snaps, meta = run.probes(), run.probe_meta()
    step = max(snaps) if step is None else step
    t = snaps[step]
    labels, modality = np.array(meta["label"]), np.array(meta["modality"])
    seen = np.array(meta["task"]) <= step
    effect = probe.realignment_effect(t["known_unaligned"].numpy()[seen], t["known"].numpy()[seen], labels[seen],
                                      modality[seen], t["text"].numpy(), np.array(meta["class_modality"]))
    mods = list(effect["before"]["accuracy"])
    fig = go.Figure([go.Bar(x=mods, y=[effect[w]["accuracy"][m] for m in mods], name=f"accuracy {w}")
                     for w in ("before", "after")])
    fig.update_layout(title=f"Re-alignment at step {step}: probe accuracy over seen classes, before vs after",
                      barmode="group", yaxis_range=[0, 1], height=380)
    return fig
