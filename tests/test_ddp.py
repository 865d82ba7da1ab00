"""Data-parallel extraction and training under torchrun with 2 CPU processes (gloo): a shared cache written by both
ranks at once, a cache per process, and a kill and a resume on which both ranks agree."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pandas as pd
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
    assert ddp.latest_step() == 7 and len(list((cache / "features").glob("*/shard_*.safetensors"))) == 8
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


def _torchrun(*args: str, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", *args]
    return subprocess.Popen(cmd, env=env, **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
                                             **popen})


CI_RUN = ["--preset", "ci", "method.name=finetune", "train.device=cpu"]


def _kill_tree(pid: int) -> None:
    """SIGKILL pid and every process below it at once (torchrun starts its workers in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += parents.get(tree[-1], [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_each_process_fills_its_own_cache_and_the_replicas_agree(tmp_path):
    # One cache folder per process, as on two machines: a hit counts only where both have the file, each fills its
    # own, and the backbone each pretrains from its own corpus is the same (else the replicas would diverge).
    wrapper = tmp_path / "per_rank_cache.py"
    wrapper.write_text("import os, sys\nos.environ['MMCL_CACHE'] = os.path.join(sys.argv.pop(1), "
                       "'rank' + os.environ['LOCAL_RANK'])\nfrom mmcl_lab.cli import main\nsys.exit(main())\n")
    proc = _torchrun(str(wrapper), str(tmp_path), "run", "--out", str(tmp_path / "run"), *CI_RUN,
                     env_extra={"MMCL_CACHE": ""})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert Run(tmp_path / "run").latest_step() == 7
    for rank in ("rank0", "rank1"):
        assert len(list((tmp_path / rank / "features").glob("*/shard_*.safetensors"))) == 8
        assert len(list((tmp_path / rank / "backbones").glob("*.safetensors"))) == 1


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_where_both_agree(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    proc = _torchrun("-m", "mmcl_lab.cli", "run", "--out", str(tmp_path / "whole"), *CI_RUN, cache)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    killed = tmp_path / "killed"
    # its output is not read while it runs, so none may fill a pipe and stall it
    proc = _torchrun("-m", "mmcl_lab.cli", "run", "--out", str(killed), *CI_RUN, cache,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_002" / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before its third task"
        time.sleep(0.05)
    _kill_tree(proc.pid)  # torchrun and both workers, at once
    proc.communicate(timeout=60)
    done = Run(killed).latest_step()
    assert done is not None and 2 <= done < 7
    proc = _torchrun("-m", "mmcl_lab.cli", "resume", str(killed))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    pd.testing.assert_frame_equal(Run(killed).results(), Run(tmp_path / "whole").results())


def test_gradients_are_averaged_in_one_all_reduce_per_dtype(tmp_path):
    script = tmp_path / "average.py"
    script.write_text('''
import torch, torch.distributed as dist
from mmcl_lab.train import average_gradients
dist.init_process_group("gloo")
rank, calls = dist.get_rank(), []
reduce = dist.all_reduce
dist.all_reduce = lambda t, *a, **k: calls.append(t.numel()) or reduce(t, *a, **k)
params = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4)),
          torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)), torch.nn.Parameter(torch.zeros(5))]
for k, p in enumerate(params[:3]):  # the last one got no gradient on either process
    p.grad = torch.full_like(p, float(rank + 1) * (k + 1))
average_gradients(params, 2)
assert sorted(calls) == [2, 15], calls  # one bucket of 6 + 4 + 5 float32 values, one of 2 float64 values
for k, p in enumerate(params[:3]):
    assert torch.equal(p.grad, torch.full_like(p, 1.5 * (k + 1))), (k, p.grad)
assert torch.equal(params[3].grad, torch.zeros(5)) and params[0].grad.shape == (3, 2)
print("ok", rank)
''')
    proc = _torchrun(str(script))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("ok") == 2
