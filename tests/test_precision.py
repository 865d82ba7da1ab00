"""train.precision on the CPU: the choices, bf16 autocast, and the float16 loss scaler's state across a resume."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmcl_lab import run as run_module
from mmcl_lab.config import ConfigError, apply_overrides
from mmcl_lab.run import run_stream
from mmcl_lab.utils import compute_dtype

from conftest import head


def test_precision_choices():
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "auto") == torch.float32 and compute_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="train.precision=fp16 needs a CUDA device, not cpu"):
        compute_dtype(cpu, "fp16")


def test_an_unknown_precision_is_a_config_error(ci_cfg):
    with pytest.raises(ConfigError, match="train.precision 'fp8'; choose from auto, fp32, bf16, fp16"):
        apply_overrides(ci_cfg, {"train.precision": "fp8"})


def test_bf16_trains_on_the_cpu(ci_cfg, ci_stream, ci_backbone, tmp_path):
    cfg = apply_overrides(ci_cfg, {"method.name": "finetune", "train.precision": "bf16"})
    run = run_stream(cfg, tmp_path / "bf16", head(ci_stream, 2), backbone=ci_backbone)
    assert np.isfinite(run.results().value).all() and np.isfinite(run.train_log().loss).all()


def test_the_loss_scaler_is_checkpointed_and_a_resume_continues_it(ci_cfg, ci_stream, ci_backbone, tmp_path,
                                                                   monkeypatch):
    # float16 on a CPU: the run makes a loss scaler as it would on a GPU without bf16 (the maths stays float32)
    monkeypatch.setattr(run_module, "compute_dtype", lambda device, precision: torch.float16)
    cfg = apply_overrides(ci_cfg, {"method.name": "finetune"})
    stream = head(ci_stream, 3)
    whole = run_stream(cfg, tmp_path / "whole", stream, backbone=ci_backbone)
    run_stream(cfg, tmp_path / "part", stream, stop_after=0, backbone=ci_backbone)
    resumed = run_stream(cfg, tmp_path / "part", stream, backbone=ci_backbone)
    pd.testing.assert_frame_equal(resumed.results(), whole.results())

    def scaler(run, step):
        return json.loads((run.checkpoint_dir(step) / "state.json").read_text())["grad_scaler"]
    assert scaler(whole, 0)["_growth_tracker"] > 0  # it counted steps...
    assert scaler(resumed, 2) == scaler(whole, 2)  # ... and the resumed run went on from the checkpointed count
