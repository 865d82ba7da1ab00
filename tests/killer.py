"""Run a ci training and SIGKILL this very process at a chosen point (used by test_kill_resume.py).

usage: python killer.py RUN_DIR CACHE_DIR METHOD train:N | save:N
  train:N  -- die at the N-th optimiser step of the training loop (in the middle of a task)
  save:N   -- die inside the N-th atomic write, after the temp file is written but before the rename
"""

import os
import signal
import sys

import torch

from mmcl_lab import utils
from mmcl_lab.config import load_config
from mmcl_lab.run import run_stream

run_dir, cache_dir, method, point = sys.argv[1:5]
kind, n = point.split(":")
calls = {"n": 0}


def maybe_die():
    calls["n"] += 1
    if calls["n"] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


if kind == "train":  # the shared loop's optimiser (AdamW) steps, whatever hooks a method overrides
    original = torch.optim.AdamW.step
    torch.optim.AdamW.step = lambda self, *a, **k: (maybe_die(), original(self, *a, **k))[1]
else:
    real_replace = os.replace
    utils.os.replace = lambda src, dst: (maybe_die(), real_replace(src, dst))[1]

cfg = load_config("ci", {"data.cache_dir": cache_dir, "method.name": method, "train.device": "cpu"})
run_stream(cfg, run_dir)
sys.exit(3)  # reaching here means the kill point was never hit
