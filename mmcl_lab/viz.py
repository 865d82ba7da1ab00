"""Plotly figures and ipywidgets controls over a run directory: accuracy, training curves, drift, modality bias,
re-alignment, retrieval; and the same figures as PNG, SVG or PDF files (save, save_figures) for a paper.

Every figure reads only from the run directory. Without a live kernel (or with MMCL_STATIC=1) the drift
explorer is a static figure with animation frames and a step slider, which also renders in exported HTML.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import warnings
from contextlib import suppress
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import probe, retrieval
from .metrics import accuracy_matrix
from .modalities import colour as modality_colour
from .modalities import marker as modality_marker
from .rundir import Run
from .utils import atomic_write_bytes

# One visual language for every figure: a modality always has the same colour and marker (its registration in
# modalities/ says which), and a class is a shade of its modality's hue (so 40+ classes stay distinct and still
# read as their modality).
SETTING_NAMES = {"known": "modality given", "agnostic": "modality hidden", "known_unaligned": "modality given, "
                 "before re-alignment"}


def shade(colour: str, i: int, n: int) -> str:
    """The i-th of n shades of a hex colour, from darker to lighter."""
    t = 0.0 if n <= 1 else i / (n - 1)  # 0 .. 1
    mix = -0.45 + 0.9 * t  # darken by up to 45 %, lighten by up to 45 %
    rgb = [int(colour[k:k + 2], 16) for k in (1, 3, 5)]
    rgb = [round(c + (255 - c) * mix) if mix > 0 else round(c * (1 + mix)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _method(run: Run) -> str:
    """The method a run trained, for figure titles (figures of two methods often sit side by side)."""
    return run.config().method.name


def step_label(step: int) -> str:
    """'before training' for step -1, else 'after task k'."""
    return "before training" if step < 0 else f"after task {step}"


def accuracy_heatmap(run: Run, setting: str = "known") -> go.Figure:
    """R[step, task] as a heatmap, with the untrained model as the first row."""
    results = run.results()
    R, init = accuracy_matrix(results, setting)
    tasks = results[results.step == -1].drop_duplicates("task").sort_values("task")
    cols = [f"{t}:{m}" for t, m in zip(tasks.task, tasks.modality)]
    rows = ["before training"] + [f"after {c}" for c in cols[: len(R)]]
    z = np.vstack([init, R])
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, zmin=0, zmax=1, colorscale="Viridis",
                               text=np.round(z, 2), texttemplate="%{text}", colorbar=dict(title="acc")))
    fig.update_layout(title=f"{_method(run)}: accuracy R[step, task], {SETTING_NAMES.get(setting, setting)}",
                      xaxis_title="evaluated task", yaxis_title="model", yaxis_autorange="reversed",
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


def _fit_2d(x: np.ndarray, method: str, seed: int, n_epochs: int = 200) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    import umap  # imported lazily: numba compilation costs ~20 s on first use

    with warnings.catch_warnings():  # a seeded fit is single-threaded by design; UMAP warns about it every time
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
        return umap.UMAP(n_components=2, n_neighbors=15, random_state=seed, n_epochs=n_epochs).fit_transform(x)


def warm_up(method: str = "umap") -> threading.Thread | None:
    """Pay UMAP's numba compilation (about 20 s, once per kernel; its cache does not cover the fit) in a background
    thread, while the cells before the first drift explorer run: a tiny fit through the same code path. None for
    PCA, which has nothing to compile. The explorer's own fit waits for it if it is still compiling."""
    if method != "umap":
        return None
    tiny = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    thread = threading.Thread(target=_fit_2d, args=(tiny, "umap", 0, 5), name="umap warm-up", daemon=True)
    thread.start()
    return thread


def _probe_frame(run: Run, coords: dict[int, np.ndarray]) -> pd.DataFrame:
    meta = run.probe_meta()
    names = np.array(meta["class_names"])
    frames = []
    for step, xy in coords.items():
        frames.append(pd.DataFrame({"step": step, "x": xy[:, 0], "y": xy[:, 1], "modality": meta["modality"],
                                    "class": names[meta["label"]], "task": [f"task {t}" for t in meta["task"]],
                                    "sample": meta["sample"]}))
    return pd.concat(frames, ignore_index=True)


def _group_colours(df: pd.DataFrame, color: str) -> dict[str, str]:
    """Colour of each group: the modality's colour, or shades of it per class or task within the modality."""
    if color == "modality":
        return {m: modality_colour(m) for m in df.modality.unique()}
    out = {}
    for m, part in df.groupby("modality", sort=False):
        groups = list(dict.fromkeys(part[color]))
        out |= {g: shade(modality_colour(m), i, len(groups)) for i, g in enumerate(groups)}
    return out


def _scatter(df: pd.DataFrame, color: str) -> list[go.Scattergl]:
    colours = _group_colours(df, color)
    traces = []
    for group, part in df.groupby(color, sort=False):
        modality = part.modality.iloc[0]
        traces.append(go.Scattergl(
            x=part.x, y=part.y, mode="markers", name=str(group), legendgroup=modality,
            marker=dict(size=6, color=colours[group], symbol=modality_marker(modality)),
            customdata=part[["class", "sample", "modality", "task"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]}, %{customdata[3]}<extra></extra>"))
    return traces


def _trajectories(df: pd.DataFrame, upto: int) -> list[go.Scatter]:
    """Each modality's centroid over steps -1..upto: a line of stars in the modality's colour."""
    cent = df[df.step <= upto].groupby(["modality", "step"], sort=False)[["x", "y"]].mean().reset_index()
    return [go.Scatter(x=p.x, y=p.y, mode="lines+markers", name=f"{m} centroid", showlegend=False,
                       line=dict(color=modality_colour(m), width=1.5),
                       marker=dict(symbol="star", size=10, color=modality_colour(m), line=dict(color="black", width=1)),
                       hovertext=[f"{m} centroid, {step_label(s)}" for s in p.step], hoverinfo="text")
            for m, p in cent.groupby("modality", sort=False)]


def _explorer_layout(df: pd.DataFrame, kind: str, method: str, who: str) -> dict:
    axis = "UMAP" if method == "umap" else "PCA"
    return dict(height=580, xaxis=dict(range=_span(df.x), title=f"{axis} 1 (one fit over all steps)"),
                yaxis=dict(range=_span(df.y), title=f"{axis} 2"), legend=dict(title="colour"),
                title=f"{who}: probe embeddings, {SETTING_NAMES.get(kind, kind)}; stars trace each modality's centroid")


def drift_figure(run: Run, kind: str = "known", color: str = "modality", method: str | None = None) -> go.Figure:
    """Static drift explorer: one animation frame per step, a step slider, centroid trajectories."""
    method = method or run.config().probe.projection
    df = _probe_frame(run, project(run, kind, method))
    steps = sorted(df.step.unique())
    frames = [go.Frame(name=str(s), data=_scatter(df[df.step == s], color) + _trajectories(df, s)) for s in steps]
    fig = go.Figure(data=frames[-1].data, frames=frames)  # opens on the last step
    fig.update_layout(
        **_explorer_layout(df, kind, method, _method(run)),
        sliders=[dict(active=len(steps) - 1, currentvalue=dict(prefix="model: "), steps=[
            dict(label=step_label(s), method="animate", args=[[str(s)], dict(mode="immediate", frame=dict(duration=0))])
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

    method = method or run.config().probe.projection
    df = _probe_frame(run, project(run, kind, method))
    steps = sorted(df.step.unique())
    fig = go.FigureWidget(layout=_explorer_layout(df, kind, method, _method(run)))
    # The slider's own readout cuts "before training" short: a label beside it names the step instead.
    slider = W.SelectionSlider(options=[(step_label(s), s) for s in steps], value=steps[-1], description="model",
                               readout=False)
    shown = W.Label()
    play = W.Play(min=0, max=len(steps) - 1, value=len(steps) - 1, interval=800, description="play")
    W.jslink((play, "value"), (slider, "index"))
    colour = W.Dropdown(options=["modality", "class", "task"], value="modality", description="colour by")

    def redraw(*_):
        shown.value = step_label(slider.value)
        with fig.batch_update():
            fig.data = []
            for trace in _scatter(df[df.step == slider.value], colour.value) + _trajectories(df, slider.value):
                fig.add_trace(trace)

    slider.observe(redraw, "value")
    colour.observe(redraw, "value")
    redraw()
    note = W.HTML("<small>Each point is a fixed test sample (hover: class, sample id, modality, task). "
                  "'before training' is the pretrained backbone before the first task. Stars: each modality's "
                  "centroid so far. 'modality given' embeds with the modality known to the method.</small>")
    return W.VBox([W.HBox([slider, shown, colour, play]), fig, note])


def drift_curves(run: Run, kind: str = "known") -> go.Figure:
    """Per step, against the step before: similarities (linear CKA and kNN overlap; 1 = unchanged) on the
    left, each modality's centroid drift (a distance; 0 = unchanged) on the right."""
    from plotly.subplots import make_subplots

    snaps, meta = run.probes(), run.probe_meta()
    modality = np.array(meta["modality"])
    steps = sorted(snaps)
    rows = []
    for prev, step in zip(steps, steps[1:]):
        a, b = snaps[prev][kind].numpy(), snaps[step][kind].numpy()
        rows.append({"step": step, "CKA": probe.linear_cka(a, b), "kNN overlap": probe.knn_overlap(a, b),
                     **{f"drift {m}": d for m, d in probe.centroid_drift(a, b, modality).items()}})
    df = pd.DataFrame(rows)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("similarity to the previous step (1 = unchanged)",
                                                        "centroid drift per modality (0 = unchanged)"))
    for name, dash in (("CKA", "solid"), ("kNN overlap", "dot")):
        fig.add_trace(go.Scatter(x=df.step, y=df[name], mode="lines+markers", name=name, line=dict(color="black",
                                 dash=dash)), row=1, col=1)
    for m in dict.fromkeys(modality.tolist()):
        fig.add_trace(go.Scatter(x=df.step, y=df[f"drift {m}"], mode="lines+markers", name=f"drift {m}",
                                 line=dict(color=modality_colour(m)), marker=dict(symbol=modality_marker(m))),
                      row=1, col=2)
    fig.update_xaxes(title_text="after task")
    fig.update_yaxes(title_text="similarity", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="distance in the embedding space", row=1, col=2)
    fig.update_layout(title=f"{_method(run)}: how much the probe embeddings move at each task "
                            f"({SETTING_NAMES.get(kind, kind)})",
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
    fig = go.Figure([go.Scatter(x=p.step, y=p.gap, mode="lines+markers", name=m, line=dict(color=modality_colour(m)),
                                marker=dict(symbol=modality_marker(m)))
                     for m, p in df.groupby("modality", sort=False)])
    fig.update_layout(title=f"{_method(run)}: modality gap, probe centroid to class-text centroid "
                            f"({SETTING_NAMES.get(kind, kind)})",
                      xaxis_title="after task (-1 = before training)", yaxis_title="distance", height=400)
    return fig


def bias_panel(run: Run) -> go.Figure:
    """Accuracy per modality over steps, with and without the modality identity: the gap is modality bias."""
    res = run.results()
    res = res[(res.metric == "acc") & (res.step >= 0) & (res.task <= res.step)]
    df = res.groupby(["setting", "modality", "step"])["value"].mean().reset_index()
    fig = go.Figure()
    for m, part in df.groupby("modality", sort=False):
        for setting, dash in (("known", "solid"), ("agnostic", "dot")):
            p = part[part.setting == setting]
            fig.add_trace(go.Scatter(x=p.step, y=p.value, name=f"{m} ({SETTING_NAMES[setting]})", mode="lines+markers",
                                     line=dict(color=modality_colour(m), dash=dash),
                                     marker=dict(symbol=modality_marker(m))))
    fig.update_layout(title=f"{_method(run)}: accuracy on the seen tasks of each modality, modality given (solid) "
                            "vs hidden (dotted)",
                      xaxis_title="after task", yaxis_title="accuracy", yaxis_range=[0, 1], height=420)
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
    fig = go.Figure([go.Bar(x=mods, y=[effect[w]["accuracy"][m] for m in mods], name=f"{w} re-alignment",
                            marker=dict(color=[modality_colour(m) for m in mods],
                                        opacity=0.45 if w == "before" else 1.0,
                                        pattern_shape="/" if w == "before" else ""))
                     for w in ("before", "after")])
    fig.update_layout(title=f"{_method(run)}: re-alignment {step_label(step)}, probe accuracy over the seen classes "
                            "(modality given)",
                      barmode="group", yaxis_range=[0, 1], xaxis_title="modality", yaxis_title="accuracy", height=380)
    return fig


def training_curves(run: Run, smooth: int = 1) -> go.Figure:
    """Each loss term per optimiser step (train_log.csv), with each task's steps shaded in its modality's colour;
    smooth > 1 draws a centred rolling mean over that many steps."""
    log = run.train_log()
    terms = [c for c in log.columns if c not in ("step", "task", "epoch", "lr", "wall_time")]
    fig = go.Figure()
    for term, dash in zip(terms, ("solid", "dot", "dash", "dashdot", "longdash") * 4):
        values = log[term].rolling(smooth, center=True, min_periods=1).mean() if smooth > 1 else log[term]
        fig.add_trace(go.Scatter(x=log.step, y=values, mode="lines", name=term, line=dict(dash=dash, width=1.5,
                                 color="black" if term == "loss" else None)))
    results = run.results()
    modality = results.drop_duplicates("task").set_index("task").modality
    for task, part in log.groupby("task"):
        m = modality.get(task, "")
        fig.add_vrect(x0=part.step.min() - 0.5, x1=part.step.max() + 0.5, line_width=0, opacity=0.12,
                      fillcolor=modality_colour(m) if m else "#888888", annotation_text=f"{task}:{m}",
                      annotation_position="top left", annotation_font_size=10)
    fig.update_layout(title=f"{_method(run)}: training loss per step (shaded: one task each)",
                      xaxis_title="optimiser step", yaxis_title="loss", height=420)
    return fig


def retrieval_matrix(run: Run, step: int | None = None, kind: str = "known", metric: str = "mAP") -> go.Figure:
    """Any-to-any retrieval between modalities and class texts on the probe set at step (default: the last),
    through the shared space (retrieval.any_to_any); blank where the two share no class name."""
    snaps, meta = run.probes(), run.probe_meta()
    step = max(snaps) if step is None else step
    t = snaps[step]
    table = retrieval.any_to_any(t[kind].double().numpy(), np.array(meta["label"]), np.array(meta["modality"]),
                                 t["text"].double().numpy(), meta["class_names"], metric)
    z = table.to_numpy(dtype=float)
    text = np.where(np.isnan(z), "", np.char.mod("%.2f", np.nan_to_num(z)))  # blank cells stay blank
    fig = go.Figure(go.Heatmap(z=z, x=list(table.columns), y=list(table.index), zmin=0, zmax=1,
                               colorscale="Viridis", text=text, texttemplate="%{text}", colorbar=dict(title=metric)))
    fig.update_layout(title=f"{_method(run)}: {metric} of retrieval between modalities, {step_label(step)}<br>"
                            f"<sup>{SETTING_NAMES.get(kind, kind)}; blank: the two share no class name</sup>",
                      xaxis_title="gallery", yaxis_title="queries", yaxis_autorange="reversed", height=420)
    return fig


FIGURE_FORMATS = ("png", "svg", "pdf")


class FigureExportUnavailable(OSError):
    """kaleido, or the Chrome or Chromium it drives, is missing: figures cannot be written as files here."""


def save(fig: go.Figure, path: str | Path, width: int | None = None, height: int | None = None) -> Path:
    """Write fig as PNG, SVG or PDF, by path's suffix, through kaleido and a local Chrome or Chromium."""
    return save_figures({path: fig}, width, height)[0]


def save_figures(figures: dict[str | Path, go.Figure], width: int | None = None,
                 height: int | None = None) -> list[Path]:
    """Write several figures (path -> figure) in one browser session; each file appears whole or not at all."""
    import plotly.io as pio

    paths = [Path(p) for p in figures]
    for path in paths:
        if path.suffix.lstrip(".").lower() not in FIGURE_FORMATS:
            raise ValueError(f"{path}: a figure file must end in one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    folders = {p.parent for p in paths}
    created = sorted({d for f in folders for d in (f, *f.parents) if not d.exists()}, key=lambda d: -len(d.parts))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    staged = [p.with_name(f".{p.name}.{os.getpid()}.tmp{p.suffix}") for p in paths]  # kaleido reads the suffix
    try:
        pio.write_images(list(figures.values()), staged, format=[p.suffix.lstrip(".").lower() for p in paths],
                         width=width, height=height)
        for tmp, path in zip(staged, paths):
            os.replace(tmp, path)
    except BaseException as err:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first: leave no empty folder behind
            with suppress(OSError):
                folder.rmdir()
        text = str(err).lower()
        if isinstance(err, ImportError) or (isinstance(err, (ValueError, RuntimeError)) and
                                            ("kaleido" in text or "chrome" in text)):
            raise FigureExportUnavailable(
                f"{paths[0]}: figure files need kaleido>=1 (pip install 'mmcl_lab[figures]') and a Chrome or Chromium "
                f"(apt-get install chromium); {' '.join(str(err).split())}") from None
        raise
    return paths


def standard_figures(run: Run) -> dict[str, go.Figure]:
    """A run's standard figures by file stem: accuracy heatmaps per setting, training curves, drift, modality gap,
    bias (when the modality can be given at test time), re-alignment and the retrieval matrix."""
    settings = sorted(run.results().setting.unique())
    figures = {f"accuracy_{s}": accuracy_heatmap(run, s) for s in settings}
    figures |= {"training_curves": training_curves(run), "drift_curves": drift_curves(run),
                "modality_gap": modality_gap_plot(run), "realignment": realignment_plot(run),
                "retrieval": retrieval_matrix(run, kind="known" if "known" in settings else "agnostic")}
    if "known" in settings:
        figures["bias"] = bias_panel(run)
    return figures


def write_figures(run: Run, out_dir: str | Path, formats: tuple[str, ...] = ("pdf", "svg")) -> list[Path]:
    """Every standard figure of run as <out_dir>/<stem>.<format> for each format: `mmcl-lab figures`."""
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad:
        raise ValueError(f"--formats: {', '.join(bad)} unknown; choose from {', '.join(FIGURE_FORMATS)}")
    figures = standard_figures(run)
    return save_figures({Path(out_dir) / f"{stem}.{fmt}": fig for stem, fig in figures.items() for fmt in formats})
