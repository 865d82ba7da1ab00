"""What a study leaves behind: the training log (CSV, TensorBoard, callbacks) and LaTeX tables for a paper."""

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from mmcl_lab.cli import main
from mmcl_lab.compare import compare
from mmcl_lab.config import ConfigError, apply_overrides
from mmcl_lab.run import Run, run_stream

from conftest import head


@pytest.fixture(scope="module")
def logged_run(ci_cfg, ci_stream, ci_backbone, tmp_path_factory):
    """A 5-task COMM run with TensorBoard on and a callback attached: (run, the rows the callback saw)."""
    seen = []
    cfg = apply_overrides(ci_cfg, {"method.name": "comm", "train.tensorboard": True})
    run = run_stream(cfg, tmp_path_factory.mktemp("logged"), head(ci_stream, 5), backbone=ci_backbone,
                     callbacks=[seen.append])
    return run, seen


def test_every_optimiser_step_is_logged(logged_run, ci_cfg):
    run, seen = logged_run
    log = run.train_log()
    assert list(log.columns[:4]) == ["step", "task", "epoch", "loss"] and list(log.columns[-2:]) == ["lr", "wall_time"]
    assert "ce" in log.columns and "sr" in log.columns  # COMM's terms
    assert log.step.tolist() == list(range(len(log)))
    assert sorted(log.task.unique()) == [0, 1, 2, 3, 4] and log.epoch.max() == ci_cfg.train.epochs - 1
    # self-regularisation from a modality's second task on: task 4 is the second image task
    assert log.sr[log.task < 4].isna().all() and log.sr[log.task == 4].notna().all()
    assert np.isfinite(log.loss).all() and (log.lr == ci_cfg.train.lr).all()
    assert log.wall_time.is_monotonic_increasing
    assert len(seen) == len(log) and seen[-1]["step"] == log.step.iloc[-1]  # the callback saw every row


def test_tensorboard_events_hold_the_same_losses(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = logged_run
    events = EventAccumulator(str(run.path / "tensorboard")).Reload()
    loss = events.Scalars("train/loss")
    log = run.train_log()
    assert [e.step for e in loss] == log.step.tolist()
    assert np.allclose([e.value for e in loss], log.loss, rtol=1e-6)


def test_tensorboard_without_its_package_is_a_config_error(ci_cfg, monkeypatch):
    import importlib.util

    from mmcl_lab.config import ConfigError, check_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.tensorboard=true needs the tensorboard package"):
        check_config(apply_overrides(ci_cfg, {"train.tensorboard": True}))


def test_a_torn_last_line_is_dropped_and_steps_number_on(tmp_path):
    from mmcl_lab.trainlog import TrainLog, read_rows

    log = TrainLog(tmp_path)
    for task in (0, 0, 1):
        log({"task": task, "epoch": 0, "loss": 1.5, "lr": 0.1, "wall_time": 0.0})
    with (tmp_path / "train_log.csv").open("a") as f:
        f.write("3,1,0,1.2")  # a kill in the middle of a line
    assert len(read_rows(tmp_path / "train_log.csv")) == 3
    again = TrainLog(tmp_path, first_task=1)  # resuming at task 1 keeps task 0's two rows
    assert [r["step"] for r in read_rows(again.path)] == ["0", "1"] and again.step == 2


# ---- LaTeX ------------------------------------------------------------------------------------------------------


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)&", row.removesuffix("\\\\").strip())


def check_booktabs(tex: str) -> int:
    """Assert the structure of every booktabs table in tex; returns how many there are."""
    tables = re.findall(r"\\begin\{tabular\}\{([lcr]+)\}\n(.*?)\\end\{tabular\}", tex, re.S)
    for spec, body in tables:
        lines = body.strip().splitlines()
        assert lines[0] == "\\toprule" and lines[2] == "\\midrule" and lines[-1] == "\\bottomrule"
        rows = [lines[1], *lines[3:-1]]
        assert rows and all(r.endswith("\\\\") and len(_cells(r)) == len(spec) for r in rows)
        for cell in (c for r in rows for c in _cells(r)):
            assert cell.count("{") == cell.count("}") and cell.count("$") % 2 == 0, cell
        assert any("\\boldmath" in r for r in rows[1:]), "the best value of some column is bold"
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == len(tables)
    return len(tables)


def test_compare_writes_a_booktabs_table_that_compiles(ci_cfg, tmp_path):
    out = tmp_path / "cmp"
    cfg = apply_overrides(ci_cfg, {"stream.tasks_per_modality": 1})
    compare(cfg, ["finetune", "zeroshot"], [0, 1], out)
    tex = (out / "comparison.tex").read_text()
    assert check_booktabs(tex) == 2  # one table per setting
    assert f"% numbers from {out / 'comparison.csv'}" in tex
    runs = pd.read_csv(out / "runs.csv")
    assert all(os.path.exists(p) for p in runs.results_csv)  # every number keeps the file it came from
    table = pd.read_csv(out / "comparison.csv")
    best = table[(table.setting == "known") & (table.modality == "all")].set_index("method").avg_acc.idxmax()
    known = tex[tex.index("tab:compare-known"):]
    assert re.search(rf"^{best} & {{\\boldmath \$", known, re.M)  # the best method's avg_acc is the bold one
    pdflatex = shutil.which("pdflatex")
    if not pdflatex and not os.environ.get("CI"):
        pytest.skip("pdflatex is not installed here (CI installs it): structure checked, compilation not")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex + "\\end{document}\n")
    done = subprocess.run([pdflatex or "pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").read_bytes().startswith(b"%PDF-")


@pytest.mark.parametrize("vary", [("split", "backbone"), ()])
def test_seeds_of_a_comparison_vary_the_split_and_the_backbone_as_asked(vary, ci_cfg, tmp_path):
    """With vary, each seed draws its own backbone (pretrain.seed + seed) and its own split; seed 0 is the preset."""
    out = tmp_path / "vary"
    cfg = apply_overrides(ci_cfg, {"stream.tasks_per_modality": 1})
    compare(cfg, ["zeroshot"], [0, 1], out, vary=vary)
    runs = {s: Run(out / "zeroshot" / f"seed_{s}") for s in (0, 1)}
    weights = {s: r.provenance()["start_weights"] for s, r in runs.items()}
    tests = {s: r.results().query("step == -1 and setting == 'known'").n.tolist() for s, r in runs.items()}
    configs = {s: r.config() for s, r in runs.items()}
    if vary:
        assert weights[0] != weights[1] and configs[1].pretrain.seed == 1 and configs[1].data.vary_split
        assert configs[0].pretrain.seed == 0 and configs[0].data.vary_split  # the split of seed 0 is data.seed's
        prints = {s: r.provenance()["fingerprints"] for s, r in runs.items()}
        assert prints[0]["backbone"]["weights"] != prints[1]["backbone"]["weights"]
        assert prints[0]["stream"] == prints[1]["stream"]  # the same data and features, split otherwise
        assert set(prints[0]["stream"]) == set(prints[0]["backbone"]["corpus"]) == set(cfg.stream.modalities)
        assert prints[0]["backbone"]["corpus"] != prints[1]["backbone"]["corpus"]  # another corpus draw
    else:
        assert weights[0] == weights[1] and tests[0] == tests[1]
        assert configs[1].pretrain.seed == 0 and not configs[1].data.vary_split
    with pytest.raises(ConfigError, match="--vary: unknown"):
        compare(cfg, ["zeroshot"], [0], out, vary=("order",))


def test_report_writes_its_summary_as_latex(logged_run, tmp_path, capsys):
    run, _ = logged_run
    assert main(["report", str(run.path), "--latex", str(tmp_path / "run.tex")]) == 0
    printed = capsys.readouterr().out
    assert "zscl_transfer" in printed and "## retrieval after task 4" in printed
    tex = (tmp_path / "run.tex").read_text()
    assert f"% numbers from {run.path / 'results.csv'}" in tex and "\\toprule" in tex and "zscl transfer" in tex
