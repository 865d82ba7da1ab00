"""Data-parallel extraction and training under torchrun with 2 CPU processes (gloo)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mmcl_lab.config import load_config
from mmcl_lab.metrics import accuracy_matrix
from mmcl_lab.run import Run, run_stream


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_run_matches_a_single_process_run(tmp_path):
    cache = tmp_path / "cache"  # empty: extraction itself runs sharded across the two processes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "mmcl_lab.cli", "run", "--preset", "ci", "--out",
           str(tmp_path / "ddp"), f"data.cache_dir={cache}", "method.name=er", "train.device=cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports
    ddp = Run(tmp_path / "ddp")
    # 4 stream and 4 pretraining-corpus feature files, and one backbone pretrained by rank 0
    assert ddp.latest_step() == 7 and len(list((cache / "features").glob("*.safetensors"))) == 8
    assert len(list((cache / "backbones").glob("*.safetensors"))) == 1

    cfg = load_config("ci", {"data.cache_dir": str(cache), "method.name": "er", "train.device": "cpu"})
    single = run_stream(cfg, tmp_path / "single")
    for setting in ("known", "agnostic"):
        a, _ = accuracy_matrix(ddp.results(), setting)
        b, _ = accuracy_matrix(single.results(), setting)
        # Same data, same seed; gradients are averaged over two half-batches instead of one full batch,
        # so the runs agree up to float rounding and uneven last batches.
        assert abs(a.mean() - b.mean()) < 0.08, (a.mean(), b.mean())
        assert np.isfinite(a).all()
