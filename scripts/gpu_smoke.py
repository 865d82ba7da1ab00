"""The GPU smoke test's two halves (scripts/gpu_smoke.sh runs them around a torchrun run and a CPU run).

    python scripts/gpu_smoke.py single OUT PRESET DEVICE   # one process: times extraction, pretraining, training
    python scripts/gpu_smoke.py check OUT TOLERANCE        # every run in OUT against OUT/cpu; exit 1 beyond it

`single` builds the stream and the backbone on DEVICE with an empty cache (OUT/cache_single), trains COMM with its
tuned settings, and writes OUT/single.json: samples per second of extraction and of training, and the peak GPU
memory. `check` prints one table row per run (avg_acc per setting, and its distance to the CPU run's).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from mmcl_lab import build_backbone, build_stream, load_config, run_stream
from mmcl_lab.metrics import summary
from mmcl_lab.run import Run
from mmcl_lab.utils import resolve_device


def single(out: Path, preset: str, device_name: str) -> None:
    cfg = load_config(preset, {"method.name": "comm", "train.device": device_name, "train.progress": False,
                               "data.cache_dir": str(out / "cache_single")}, tuned=True)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    stream = build_stream(cfg, device=device)
    extraction = time.perf_counter() - start  # data generation included: an upper bound on extraction's time
    backbone = build_backbone(cfg, stream, device)
    start = time.perf_counter()
    run = run_stream(cfg, out / "single", stream, backbone=backbone)
    training = time.perf_counter() - start
    raw = sum(len(r.y) for r in stream.raw.values())  # every sample the stream extracted (corpus not counted)
    steps = cfg.train.epochs * sum(len(t.train_y) for t in stream)
    figures = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "precision": cfg.train.precision, "samples": raw,
               "extraction_samples_per_s": round(raw / extraction, 1),
               "pretraining_s": round(backbone.seconds, 1), "training_s": round(training, 1),
               "training_samples_per_s": round(steps / training, 1),
               "peak_gpu_MB": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
               "run": str(run.path)}
    (out / "single.json").write_text(json.dumps(figures, indent=1))
    print(pd.Series(figures).to_string())


def check(out: Path, tolerance: float) -> int:
    def avg_acc(run: Run) -> pd.Series:
        table = summary(run.results())
        return table[table.modality == "all"].set_index("setting").avg_acc

    reference = avg_acc(Run(out / "cpu"))
    rows, worst = [], 0.0
    for path in sorted(p for p in out.iterdir() if (p / "config.yaml").exists()):
        acc = avg_acc(Run(path))
        gap = float((acc - reference).abs().max())
        worst = max(worst, gap if path.name != "cpu" else 0.0)
        rows.append({"run": path.name, **{f"avg_acc {s}": round(v, 4) for s, v in acc.items()},
                     "max |diff| to cpu": round(gap, 4)})
    print(pd.DataFrame(rows).to_markdown(index=False))
    verdict = "agree" if worst <= tolerance else "DISAGREE"
    print(f"\nresults {verdict} with the CPU run: largest difference {worst:.4f}, tolerance {tolerance}")
    return 0 if worst <= tolerance else 1


if __name__ == "__main__":
    command, out = sys.argv[1], Path(sys.argv[2])
    if command == "single":
        single(out, sys.argv[3], sys.argv[4])
    elif command == "check":
        sys.exit(check(out, float(sys.argv[3])))
    else:
        sys.exit(f"unknown command {command!r}; see the docstring")
