"""Kill a real training process at several points; resuming must give the uninterrupted results."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmcl_lab.config import apply_overrides
from mmcl_lab.registry import METHODS
from mmcl_lab.run import Run, resume, run_stream

KILLER = Path(__file__).with_name("killer.py")


@pytest.fixture(scope="module")
def reference(ci_cfg, ci_stream, tmp_path_factory):
    """Uninterrupted runs, one per method, computed on first use."""
    runs = {}

    def get(method: str) -> Run:
        if method not in runs:
            cfg = apply_overrides(ci_cfg, {"method.name": method})
            runs[method] = run_stream(cfg, tmp_path_factory.mktemp(method), ci_stream)
        return runs[method]
    return get


def _weights(run: Run) -> dict[str, bytes]:
    files = sorted((run.path / "checkpoints").rglob("*.safetensors"))
    return {str(p.relative_to(run.path)): p.read_bytes() for p in files}


# ci: tasks of ~105 samples, batch 32, 10 epochs -> ~30 optimiser steps per task; each finished step writes
# retrieval.csv, results.csv, a probe file, three checkpoint files and memory.json (7 atomic writes), after the run
# folder itself (config, provenance, step -1 results and probes) appears in one rename; train_log.csv is written
# whole when training starts and whenever a new loss term appears, and appended to at every optimiser step.
KILL_POINTS = [("finetune", "train:5"), ("finetune", "train:70"), ("finetune", "save:9"),
               ("finetune", "save:12"), ("comm", "train:40"), ("comm", "save:16")]
# and every method once in the middle of a task (methods that never take a step: inside a write)
KILL_POINTS += [(m, "save:12" if m in ("zeroshot", "chance") else "train:40") for m in METHODS.names()
                if m not in ("finetune", "comm")]


@pytest.mark.slow
@pytest.mark.parametrize("method,point", KILL_POINTS)
def test_killed_process_resumes_to_identical_results_and_weights(method, point, ci_cfg, ci_stream, reference,
                                                                   ci_backbone, tmp_path):
    # ci_backbone: pretrained into the cache first, so that train:N counts the run's steps, not pretraining's
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(KILLER), str(run_dir), ci_cfg.data.cache_dir, method, point],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed, not finished
    done = Run(run_dir).latest_step()
    assert done is None or done < len(ci_stream) - 1
    if (run_dir / "results.csv").exists():
        pd.read_csv(run_dir / "results.csv")  # never a torn file
    final = resume(run_dir, ci_stream)
    pd.testing.assert_frame_equal(final.results(), reference(method).results())
    pd.testing.assert_frame_equal(final.retrieval(), reference(method).retrieval())
    # the training log too, row for row, apart from when each step ran
    pd.testing.assert_frame_equal(final.train_log().drop(columns="wall_time"),
                                  reference(method).train_log().drop(columns="wall_time"))
    assert _weights(final) == _weights(reference(method))  # every checkpoint, byte for byte
    assert not list(run_dir.rglob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no leftovers
