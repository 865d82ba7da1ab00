"""Kill a real training process at several points; resuming must give the uninterrupted results."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmcl_lab.config import apply_overrides
from mmcl_lab.run import Run, resume, run_stream

KILLER = Path(__file__).with_name("killer.py")


@pytest.fixture(scope="module")
def reference(ci_cfg, ci_stream, tmp_path_factory):
    runs = {}
    for method in ("finetune", "comm"):
        cfg = apply_overrides(ci_cfg, {"method.name": method})
        runs[method] = run_stream(cfg, tmp_path_factory.mktemp(method), ci_stream).results()
    return runs


# ci: tasks of ~105 samples, batch 32, 8 epochs -> 32 optimiser steps per task; each finished step writes
# results.csv, a probe file and three checkpoint files (5 atomic writes), after config/provenance/step -1.
KILL_POINTS = [("finetune", "train:5"), ("finetune", "train:70"), ("finetune", "save:9"),
               ("finetune", "save:12"), ("comm", "train:40"), ("comm", "save:16")]


@pytest.mark.slow
@pytest.mark.parametrize("method,point", KILL_POINTS)
def test_killed_process_resumes_to_identical_results(method, point, ci_cfg, ci_stream, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(KILLER), str(run_dir), ci_cfg.data.cache_dir, method, point],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed, not finished
    done = Run(run_dir).latest_step()
    assert done is None or done < len(ci_stream) - 1
    if (run_dir / "results.csv").exists():
        pd.read_csv(run_dir / "results.csv")  # never a torn file
    final = resume(run_dir, ci_stream).results()
    pd.testing.assert_frame_equal(final, reference[method])
