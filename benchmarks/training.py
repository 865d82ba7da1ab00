"""Training speed and memory per method, scaling with tasks and classes, probe/UMAP/retrieval cost, loop overhead.

    python benchmarks/training.py [per_method] [loop_overhead] [scaling] [probe_cost]

Uses the default preset's cached features (run `mmcl-lab run --preset default` once first). Prints tables,
writes benchmarks/out/training_*.csv and an HTML plot of the scaling curves.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmcl_lab.config import apply_overrides, load_config
from mmcl_lab.evaluate import evaluate
from mmcl_lab.retrieval import both_ways
from mmcl_lab.probe import knn_overlap
from mmcl_lab.methods import Context, create_method
from mmcl_lab.backbones import build_backbone
from mmcl_lab.registry import METHODS
from mmcl_lab.run import run_stream
from mmcl_lab.streams import build_stream
from mmcl_lab.batches import n_batches

OUT = Path(__file__).with_name("out")
DEVICE = torch.device("cpu")


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 1024


def _one_method(name: str) -> dict:
    """Train one method over the default stream in this (fresh) process; report time and peak memory."""
    cfg = load_config("default", {"train.progress": False, "train.device": "cpu", "method.name": name})
    stream = build_stream(cfg, progress=False)
    backbone = build_backbone(cfg, stream, DEVICE, progress=False)
    stream.raw.clear()  # raw signals are not needed for training on cached features
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak-RSS mark to the current RSS
    before = _status_mb("VmHWM")
    torch.manual_seed(0)
    model, method = backbone.model(stream), create_method(cfg.method)
    context = Context(cfg.stream.modalities, DEVICE, cfg.seed, backbone)
    method.setup(model, context)
    steps = 0
    start = time.perf_counter()
    for task in stream:
        context.reveal(task)
        steps += cfg.train.epochs * n_batches(method.training_batches(task), cfg.train.batch_size)
        method.before_task(model, task)
        method.fit_task(model, task, cfg.train)
        method.after_task(model, task)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return dict(method=name, seconds=round(seconds, 2), steps=steps if method.trains else 0,
                steps_per_s=round(steps / seconds, 1) if method.trains and seconds else 0,
                rss_before_MB=round(before), peak_rss_MB=round(peak), training_peak_MB=round(peak - before),
                kept_state_MB=round(method.memory_bytes() / 2**20, 2))


def per_method() -> pd.DataFrame:
    """Each method in its own process, so that peak resident memory is its own."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pd.DataFrame(pool.map(_one_method, METHODS.names(), chunksize=1))


def plain_loop_ratio(cfg, stream) -> pd.DataFrame:
    """Our loop (finetune) vs a hand-written PyTorch loop doing the same forward/backward/step."""
    task = stream[0]
    torch.manual_seed(0)
    backbone = build_backbone(cfg, stream, DEVICE, progress=False)
    model, method = backbone.model(stream), create_method(apply_overrides(cfg, {"method.name": "finetune"}).method)
    method.setup(model, Context.replay(stream, 0, DEVICE))
    start = time.perf_counter()
    method.fit_task(model, task, cfg.train)
    ours = time.perf_counter() - start
    torch.manual_seed(0)
    model = backbone.model(stream)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    classes = torch.tensor(task.classes)
    target = torch.searchsorted(classes, task.train_y)
    start = time.perf_counter()
    for _ in range(cfg.train.epochs):
        perm = torch.randperm(len(target))
        for i in range(0, len(perm), cfg.train.batch_size):
            idx = perm[i:i + cfg.train.batch_size]
            logits = model.logits(model.embed(task.train_x[idx], task.feature_space), classes)
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    plain = time.perf_counter() - start
    return pd.DataFrame([dict(task=task.name[:30], mmcl_lab_s=round(ours, 3), plain_pytorch_s=round(plain, 3),
                              ratio=round(ours / plain, 2))])


def scaling(cfg) -> pd.DataFrame:
    """Wall time of a full run (finetune, er, comm) as tasks, classes and samples grow."""
    rows = []
    variants = [("tasks", k, {"stream.tasks_per_modality": k}) for k in (1, 2, 4)]  # same data, more tasks
    variants += [("classes", n, {"stream.modalities": mods}) for n, mods in  # more modalities, more classes
                 ((10, "image"), (20, "image,audio"), (36, "image,audio,depth,video"))]
    variants += [("samples per class", n, {"stream.modalities": "image,audio", "data.n_per_class": n})
                 for n in (50, 150, 300)]
    for axis, size, ov in variants:
        c = apply_overrides(cfg, {**ov, "train.progress": False})
        stream = build_stream(c)
        for name in ("finetune", "er", "comm"):
            start = time.perf_counter()
            run_stream(apply_overrides(c, {"method.name": name}), tempfile.mkdtemp(), stream)
            rows.append(dict(axis=axis, size=size, tasks=len(stream), classes=len(stream.class_names),
                             samples=sum(len(t.train_y) for t in stream), method=name,
                             seconds=round(time.perf_counter() - start, 2)))
    return pd.DataFrame(rows)


def _knn_overlap_pairwise(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """probe.knn_overlap as it was before scikit-learn: the full (N, N, E) difference tensor, for the ratio."""
    def knn(Z):
        d = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)  # (N, N)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    a, b = knn(X), knn(Y)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(X))]))


def probe_cost(cfg, stream) -> pd.DataFrame:
    """Per step: capturing the probe set; and the one-off 2-D projection over all steps (PCA vs UMAP)."""
    from mmcl_lab import viz
    from mmcl_lab.probe import capture

    run = run_stream(apply_overrides(cfg, {"method.name": "comm"}), tempfile.mkdtemp(), stream)
    torch.manual_seed(0)
    backbone = build_backbone(cfg, stream, DEVICE, progress=False)
    model, method = backbone.model(stream), create_method(apply_overrides(cfg, {"method.name": "comm"}).method)
    method.setup(model, Context.replay(stream, -1, DEVICE))
    start = time.perf_counter()
    capture(model, method, stream, DEVICE)
    per_step = time.perf_counter() - start
    rows = [dict(what="probe capture per step", points=sum(len(t.probe) for t in stream), seconds=round(per_step, 3))]
    tests = sum(len(t.test_y) for t in stream)
    start = time.perf_counter()
    evaluate(model, method, stream, len(stream) - 1, DEVICE)
    rows.append(dict(what="evaluation per step: accuracy and retrieval, both settings", points=tests,
                     seconds=round(time.perf_counter() - start, 3)))
    with torch.no_grad():  # the retrieval metrics alone, on embeddings made beforehand, both settings
        ready = [(torch.cat([method.embed(model, t.test_x, t.feature_space, m) for t in tasks]),
                  torch.cat([t.test_y for t in tasks]), [c for t in tasks for c in t.classes])
                 for m in stream.modalities for tasks in [[t for t in stream if t.modality == m]]] * 2
    start = time.perf_counter()
    for z, y, classes in ready:
        both_ways(z, y, model.class_text, classes)
    rows.append(dict(what="  of which the retrieval metrics (torchmetrics)", points=tests,
                     seconds=round(time.perf_counter() - start, 3)))
    X, Y = np.random.default_rng(0).normal(size=(2, 400, cfg.model.dim))
    for what, fn in (("kNN overlap, scikit-learn (probe.knn_overlap)", knn_overlap),
                     ("kNN overlap, the former hand-written (N, N, E) version", _knn_overlap_pairwise)):
        start = time.perf_counter()
        for _ in range(5):
            fn(X, Y)
        rows.append(dict(what=what, points=len(X), seconds=round((time.perf_counter() - start) / 5, 4)))
    for proj in ("pca", "umap"):
        start = time.perf_counter()
        coords = viz.project(run, "known", proj)
        rows.append(dict(what=f"{proj} fit over all steps", points=sum(len(v) for v in coords.values()),
                         seconds=round(time.perf_counter() - start, 2)))
    return pd.DataFrame(rows)


def main() -> None:
    cfg = load_config("default", {"train.progress": False, "train.device": "cpu"})
    stream = build_stream(cfg)
    OUT.mkdir(exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {len(stream)} tasks, "
          f"{sum(len(t.train_y) for t in stream)} training samples, {cfg.train.epochs} epochs")
    sections = {"per_method": per_method, "loop_overhead": lambda: plain_loop_ratio(cfg, stream),
                "scaling": lambda: scaling(cfg), "probe_cost": lambda: probe_cost(cfg, stream)}
    chosen = sys.argv[1:] or list(sections)  # e.g. `python benchmarks/training.py per_method`
    tables = {name: sections[name]() for name in chosen}
    for name, table in tables.items():
        table.to_csv(OUT / f"training_{name}.csv", index=False)
        print(f"\n## {name}\n\n{table.to_markdown(index=False)}")
    if "scaling" not in tables:
        return
    import plotly.express as px
    fig = px.line(tables["scaling"], x="size", y="seconds", color="method", facet_col="axis", markers=True,
                  title="Run time of a whole stream vs its size (2 CPU cores)")
    fig.update_xaxes(matches=None)
    fig.write_html(OUT / "training_scaling.html", include_plotlyjs="cdn")


if __name__ == "__main__":
    main()
