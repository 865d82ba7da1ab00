"""Tasks and task streams: disjoint named classes per task, one modality per task, scenario flags.

A stream is pure data -- tasks, class names and the texts they are aligned to, indices, cached features -- and
never builds weights: the backbone (backbones/) embeds its class texts and is what methods train.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .batches import merge_spaces
from .config import RunConfig
from .data import RawData, split_indices, template_for
from .features import Features, Tokens, extraction, load_features, take_rows
from .utils import clean_stale_cache, resolve_device


@dataclass(frozen=True, eq=False)
class Task:
    """One step of the stream: a modality, its new classes, and cached features for train and test."""

    id: int
    modality: str
    feature_space: str
    classes: tuple[int, ...]  # global class ids, disjoint from every other task's
    class_names: tuple[str, ...]
    train_x: Tokens  # (N, T, F) frozen features (in memory, or read from the cache's shards batch by batch)
    train_y: Tensor  # (N,) global class ids
    test_x: Tokens  # evaluation data: the test part, or the validation part (stream.evaluate_on=val)
    test_y: Tensor
    train_index: np.ndarray  # rows of the modality's RawData, for showing the raw signals
    test_index: np.ndarray
    probe: np.ndarray  # rows of test_x kept as the fixed probe set
    val_index: np.ndarray = field(default_factory=lambda: np.arange(0))  # rows held out for validation

    @property
    def name(self) -> str:
        return f"{self.id}:{self.modality}[{', '.join(self.class_names)}]"

    def __repr__(self) -> str:
        return f"Task({self.name}, train={len(self.train_y)}, test={len(self.test_y)})"


@dataclass(eq=False)
class TaskStream:
    """An ordered sequence of tasks plus everything the model needs to know about the label space."""

    tasks: list[Task]
    class_names: tuple[str, ...]  # indexed by global class id
    class_modality: tuple[str, ...]
    class_prompts: tuple[str, ...]  # the text each class is aligned to: its modality's template with its name
    feature_spaces: dict[str, tuple[int, int]]  # space -> (max tokens T, dim F)
    modality_id_at_test: bool
    raw: dict[str, RawData] = field(default_factory=dict)
    prep_seconds: float = 0.0  # data generation and feature extraction (cache misses cost this once)
    fingerprints: dict[str, dict[str, str]] = field(default_factory=dict)  # modality -> Features.fingerprints()

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def modalities(self) -> list[str]:
        """Modalities in order of first appearance."""
        return list(dict.fromkeys(t.modality for t in self.tasks))

    def seen_classes(self, step: int, modality: str | None = None) -> list[int]:
        """Global class ids of tasks 0..step (optionally only of one modality)."""
        return [c for t in self.tasks[:step + 1] if modality in (None, t.modality) for c in t.classes]

    def manifest(self) -> pd.DataFrame:
        """Every file of the modalities read from files, and where it went: fit, val, test, or unused (classes of
        no task, or a test part that a tuning run never loads), with its size and modification time. Saved with
        each run as manifest.csv (generated data are fixed by data.seed instead)."""
        frames = []
        for m, raw in self.raw.items():
            if not raw.lazy:
                continue
            part = np.full(len(raw), "unused", dtype=object)
            for t in (t for t in self.tasks if t.modality == m):
                part[t.train_index], part[t.test_index] = "fit", "test"
                part[t.val_index] = "val"  # last: a tuning run's test_index is its val part
            ids, size, mtime = zip(*raw.x.manifest())
            frames.append(pd.DataFrame({"modality": m, "sample": ids, "class": np.array(raw.class_names)[raw.y],
                                        "part": part, "bytes": size, "mtime_ns": mtime}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def __repr__(self) -> str:
        lines = [f"TaskStream({len(self)} tasks, {len(self.class_names)} classes, "
                 f"modality id at test: {self.modality_id_at_test})"]
        return "\n".join(lines + [f"  {t!r}" for t in self.tasks])


def _task_order(plan: list[tuple[str, int]], order: str, seed: int) -> list[tuple[str, int]]:
    if order == "blocked":
        return plan
    if order == "random":
        return [plan[i] for i in np.random.default_rng(seed).permutation(len(plan))]
    n_chunks = max(k for _, k in plan) + 1
    return [p for k in range(n_chunks) for p in plan if p[1] == k]  # interleaved


def build_stream(cfg: RunConfig, progress: bool | None = None, device: torch.device | str | None = None) -> TaskStream:
    """Load each stream modality's data and encode it once (cached) on device (default: cfg.train.device), then
    cut its classes into tasks and order them."""
    progress = cfg.train.progress if progress is None else progress
    device = resolve_device(cfg.train.device) if device is None else torch.device(device)
    start = time.perf_counter()
    clean_stale_cache(cfg.data.cache_dir)  # what a killed writer left in the cache
    loaded = {m: _load_modality(cfg, m, device, progress) for m in cfg.stream.modalities}
    per_modality = {m: (f.raw, f.tokens, f.space, chunks) for m, (f, chunks) in loaded.items()}
    plan = [(m, k) for m in cfg.stream.modalities for k in range(len(per_modality[m][3]))]
    tasks, names, mods = [], [], []
    for tid, (m, k) in enumerate(_task_order(plan, cfg.stream.order, cfg.seed)):
        raw, tokens, space, chunks = per_modality[m]
        local = chunks[k]
        global_ids = tuple(range(len(names), len(names) + len(local)))
        names += [raw.class_names[c] for c in local]
        mods += [m] * len(local)
        tasks.append(_make_task(tid, m, space, raw, tokens, local, global_ids, cfg))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class names must be unique across the stream; repeated: {duplicates}")
    templates = {m: template_for(cfg.modalities[m].template, per_modality[m][0]) for m in per_modality}
    prompts = tuple(templates[m].format(n) for n, m in zip(names, mods))
    spaces = merge_spaces((t.feature_space, t.train_x.shape[1:]) for t in tasks)
    raws = {m: v[0] for m, v in per_modality.items()}
    return TaskStream(tasks, tuple(names), tuple(mods), prompts, spaces, cfg.stream.modality_id_at_test, raws,
                      time.perf_counter() - start, {m: f.fingerprints() for m, (f, _) in loaded.items()})


def _load_modality(cfg: RunConfig, m: str, device: torch.device,
                   progress: bool) -> tuple[Features, list[np.ndarray]]:
    """Modality m's cached features (with its raw data) and its class chunks, one per task."""
    entry = cfg.modalities[m]
    feats = load_features(entry.data, m, entry.encoder, cfg.data.n_per_class, cfg.data.seed, cfg.data.cache_dir,
                          device=device, progress=progress, **extraction(cfg))
    return feats, class_chunks(cfg, m, feats.raw.class_names)


def class_chunks(cfg: RunConfig, m: str, names: tuple[str, ...]) -> list[np.ndarray]:
    """Modality m's classes cut into tasks: modalities.<m>.task_classes as listed, else stream.class_order's
    order cut into stream.tasks_per_modality near-equal parts. Local class ids, one array per task."""
    explicit = cfg.modalities[m].task_classes
    if explicit:
        index, used, chunks = {n: i for i, n in enumerate(names)}, set(), []
        for t, entry in enumerate(explicit):
            task = [n.strip() for n in entry.split("|") if n.strip()]
            unknown = [n for n in task if n not in index]
            if unknown or not task:
                raise ValueError(f"modalities.{m}.task_classes[{t}]: {unknown or 'no classes'} not among the "
                                 f"dataset's classes ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''})")
            again = used.intersection(task)
            if again:
                raise ValueError(f"modalities.{m}.task_classes[{t}]: {sorted(again)} already in an earlier task")
            used.update(task)
            chunks.append(np.array([index[n] for n in task]))
        return chunks
    k = cfg.stream.tasks_per_modality
    if k > len(names):
        raise ValueError(f"stream.tasks_per_modality={k} but {m} data has only {len(names)} classes")
    order = np.arange(len(names))
    if cfg.stream.class_order == "seeded":
        order = np.random.default_rng(cfg.data.seed).permutation(len(names))
    return np.array_split(order, k)


def _make_task(tid: int, modality: str, space: str, raw: RawData, tokens: Tokens, local: np.ndarray,
               global_ids: tuple[int, ...], cfg: RunConfig) -> Task:
    rows = np.flatnonzero(np.isin(raw.y, local))
    split_seed = cfg.seed if cfg.data.vary_split else cfg.data.seed
    groups = None if raw.groups is None else raw.groups[rows]
    if raw.split is not None:  # the release's own split; validation comes out of its train part
        train_rel, test_rel = np.flatnonzero(raw.split[rows] == "train"), np.flatnonzero(raw.split[rows] == "test")
    else:
        train_rel, test_rel = split_indices(raw.y[rows], cfg.data.test_fraction, split_seed, groups)
    fit_rel, val_rel = split_indices(raw.y[rows][train_rel], cfg.data.val_fraction, split_seed + 1,
                                     None if groups is None else groups[train_rel])
    # Training always uses the fit part; evaluation uses the test part, or -- for tuning -- the validation
    # part, in which case the test data never enters the stream.
    train_idx, val_idx = rows[train_rel][fit_rel], rows[train_rel][val_rel]
    test_idx = val_idx if cfg.stream.evaluate_on == "val" else rows[test_rel]
    to_global = np.full(len(raw.class_names), -1, dtype=np.int64)
    to_global[local] = global_ids
    train_y, test_y = (torch.from_numpy(to_global[raw.y[idx]]) for idx in (train_idx, test_idx))
    probe = np.concatenate([np.flatnonzero(test_y.numpy() == g)[:cfg.probe.per_class] for g in global_ids])
    return Task(tid, modality, space, global_ids, tuple(raw.class_names[c] for c in local),
                take_rows(tokens, train_idx), train_y, take_rows(tokens, test_idx), test_y, train_idx, test_idx,
                np.sort(probe), val_idx)
