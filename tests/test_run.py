import json
import os

import pandas as pd
import pytest

from mmcl_lab.cli import main
from mmcl_lab.config import apply_overrides
from mmcl_lab.run import Run, resume, run_stream


def test_ci_run_writes_a_complete_run_directory(ci_cfg, ci_stream, tmp_path):
    run = run_stream(ci_cfg, tmp_path / "run", ci_stream)
    results = run.results()
    n = len(ci_stream)
    assert set(results.step) == set(range(-1, n))
    acc = results[results.metric == "acc"]
    assert len(acc) == (n + 1) * n * 2  # steps x tasks x {known, agnostic}
    diagonal = results[results.metric == "acc_final_space"]  # the just-trained task over the final label space
    assert len(diagonal) == n * 2 and (diagonal.step == diagonal.task).all()
    assert results.value.between(0, 1).all()
    assert run.latest_step() == n - 1
    for name in ("config.yaml", "provenance.json", "probes/meta.json"):
        assert (run.path / name).exists()
    prov = json.loads((run.path / "provenance.json").read_text())
    assert {"packages", "git_revision", "device", "prep_seconds"} <= set(prov)
    assert prov["packages"]["torch"] and prov["packages"]["mmcl_lab"]
    assert sorted(run.probes()) == list(range(-1, n))
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.stat().st_mode & 0o777 for p in run.path.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask}  # as open() would make them, not mkstemp's owner-only 0o600


def test_same_seed_gives_identical_results(ci_cfg, ci_stream, tmp_path):
    a = run_stream(ci_cfg, tmp_path / "a", ci_stream).results()
    b = run_stream(ci_cfg, tmp_path / "b", ci_stream).results()
    pd.testing.assert_frame_equal(a, b)
    c = run_stream(apply_overrides(ci_cfg, {"seed": 1}), tmp_path / "c", ci_stream).results()
    assert not a.value.equals(c.value)


@pytest.mark.parametrize("method", ["finetune", "comm", "er"])
def test_interrupted_then_resumed_equals_uninterrupted(ci_cfg, ci_stream, tmp_path, method):
    cfg = apply_overrides(ci_cfg, {"method.name": method})
    straight = run_stream(cfg, tmp_path / "straight", ci_stream).results()
    run_stream(cfg, tmp_path / "split", ci_stream, stop_after=1)
    assert Run(tmp_path / "split").latest_step() == 1
    resumed = resume(tmp_path / "split", ci_stream).results()
    pd.testing.assert_frame_equal(straight, resumed)


def test_cli_run_and_report(ci_cfg, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    monkeypatch.setenv("MMCL_PHASES", str(tmp_path / "phases.json"))
    assert main(["run", "--preset", "ci", "method.name=finetune", "--out", str(out),
                 f"data.cache_dir={ci_cfg.data.cache_dir}"]) == 0  # overrides on both sides of an option
    text = capsys.readouterr().out
    assert "accuracy R[step, task]" in text and "avg_acc" in text and "time by phase: " in text
    assert (out / "results.csv").exists()
    phases = json.loads((tmp_path / "phases.json").read_text())
    assert {"train", "evaluate", "probes", "checkpoint", "report"} <= set(phases), sorted(phases)
    assert all(s >= 0 for s in phases.values())
    assert main(["report", str(out)]) == 0
    assert main(["resume", str(out)]) == 0  # nothing left to do: same report


def test_phases_count_their_own_time_not_that_of_nested_phases(monkeypatch):
    from mmcl_lab import timing

    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    timing.reset_phases()
    with timing.phase("outer"):
        clock[0] += 1.0
        with timing.phase("inner"):
            clock[0] += 4.0
        clock[0] += 0.5
    with timing.phase("inner"):
        clock[0] += 2.0
    assert timing.phase_times() == {"inner": 6.0, "outer": 1.5}  # 7.5 s in all, each second counted once
    assert timing.phase_summary(timing.phase_times()) == "inner 6.0 s, outer 1.5 s; 7.5 s in all"


def test_existing_run_with_other_config_is_refused(ci_cfg, ci_stream, tmp_path):
    run_stream(ci_cfg, tmp_path / "r", ci_stream, stop_after=0)
    with pytest.raises(ValueError, match="different config"):
        run_stream(apply_overrides(ci_cfg, {"train.lr": 0.5}), tmp_path / "r", ci_stream)
