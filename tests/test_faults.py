"""Bad input and faults at the command line: exit code 2, one line that names the file or key, no traceback, and
the working folder (run directories included) byte-for-byte as it was. Then the faults that happen mid-run:
divergence, a full disk, corrupt checkpoints, Ctrl-C, and a plain script on an empty cache."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from mmcl_lab import cli, utils
from mmcl_lab.config import apply_overrides
from mmcl_lab.run import Run, resume, run_stream
from mmcl_lab.streams import build_stream

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def partial_run(ci_cfg, ci_stream, tmp_path_factory) -> Path:
    """A ci finetune run with tasks 0 and 1 done (a template: cases work on copies)."""
    path = tmp_path_factory.mktemp("template") / "run"
    run_stream(apply_overrides(ci_cfg, {"method.name": "finetune"}), path, ci_stream, stop_after=1)
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if "cache" not in p.relative_to(root).parts}


def _copy_cache(cache_dir: Path, tmp: Path, monkeypatch) -> Path:
    """A private copy of the session's cache, so a case may corrupt it."""
    copy = tmp / "cache"
    shutil.copytree(cache_dir, copy)
    monkeypatch.setenv("MMCL_CACHE", str(copy))
    return copy


def _flip_byte(path: Path, where: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _png16(path: Path) -> None:
    from PIL import Image
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(path)  # 0 .. 63,000 of 65,535


RUN = ["run", "--preset", "ci", "--out"]


def _run(out="out", *overrides):
    return lambda tmp, **_: [*RUN, str(tmp / out), *overrides]


def _resume_edited(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    cfg = tmp / "run" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 0.002", "lr: 0.003"))
    return ["resume", str(tmp / "run")]


def _resume_without_results(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    (tmp / "run" / "results.csv").unlink()
    return ["resume", str(tmp / "run")]


def _resume_rows_missing(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    table = pd.read_csv(tmp / "run" / "results.csv")
    table[table.step != 0].to_csv(tmp / "run" / "results.csv", index=False)
    return ["resume", str(tmp / "run")]


def _resume_all_checkpoints_corrupt(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    for f in (tmp / "run" / "checkpoints").glob("step_*/model.safetensors"):
        _flip_byte(f)
    return ["resume", str(tmp / "run")]


def _resume_other_dim(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    for f in (tmp / "run" / "checkpoints").glob("step_*/model.safetensors"):
        save_file({"class_text": torch.zeros(3, 3)}, str(f))  # a checkpoint of another model, valid file
    return ["resume", str(tmp / "run")]


def _resume_older_format(tmp, partial_run, **_):
    import json
    shutil.copytree(partial_run, tmp / "run")
    for f in (tmp / "run" / "checkpoints").glob("step_*/state.json"):  # as an older mmcl_lab wrote them
        state = json.loads(f.read_text())
        f.write_text(json.dumps({k: v for k, v in state.items() if k != "format"} | {"method": {}}))
    return ["resume", str(tmp / "run")]


def _report_torn(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    (tmp / "run" / "results.csv").write_bytes(b'step,task,modality\n1,"unclosed\n\x00\xff')
    return ["report", str(tmp / "run")]


def _report_foreign(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    (tmp / "run" / "results.csv").write_text("epoch,loss\n1,0.5\n")
    return ["report", str(tmp / "run")]


def _other_config_in_out(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    return [*RUN, str(tmp / "run"), "train.lr=0.003"]


def _corrupt_cache(kind: str, flip: bool = True):
    """Corrupt every cached file of one kind (the session cache may hold several sizes of each)."""
    pattern = {"raw": "raw/mnist-*.npz", "features": "features/mnist-*.safetensors",
               "backbone": "backbones/binding-*.safetensors"}[kind]

    def setup(tmp, cache_dir, monkeypatch, **_):
        cache = _copy_cache(cache_dir, tmp, monkeypatch)
        for target in cache.glob(pattern):
            if flip:
                _flip_byte(target)
            else:  # NaNs under a valid checksum: the file reads back fine, its values do not
                tensors, meta = utils.read_tensor_file(target, "")
                tensors["tokens"][0, 0, 0] = float("nan")
                target.write_bytes(utils.tensor_file_bytes(tensors, {k: v for k, v in meta.items() if k != "sha256"}))
        return [*RUN, str(tmp / "out")]
    return setup


def _folder_case(modality: str, files: dict[str, bytes | None]):
    def setup(tmp, **_):
        root = tmp / "data"
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            elif content is not None:
                path.write_bytes(content)
        return [*RUN, str(tmp / "out"), f"data.{modality}=folder:{root}", f"stream.modalities={modality}",
                "stream.tasks_per_modality=1"]
    return setup


def _wav(values: np.ndarray, rate: int = 8000):
    def write(path: Path):
        import soundfile as sf
        sf.write(str(path), values, rate, subtype="FLOAT")
    return write


def _npy(array: np.ndarray, pickle: bool = False):
    return lambda path: np.save(path, array, allow_pickle=pickle)


def _pickled_weights(tmp, **_):
    weights = tmp / "clip"
    _write(weights / "config.json", "{}")
    _write(weights / "pytorch_model.bin", b"\x80\x04\x95pickle")
    return [*RUN, str(tmp / "out"), f"encoders.image=image/clip@{weights}"]


def _existing_file_out(tmp, **_):
    _write(tmp / "out", "I am a file")
    return [*RUN, str(tmp / "out")]


def _out_under_file(tmp, **_):
    _write(tmp / "file", "I am a file")
    return [*RUN, str(tmp / "file" / "out")]


def _non_run_folder(tmp, **_):
    _write(tmp / "out" / "notes.txt", "mine")
    return [*RUN, str(tmp / "out")]


def _preset_file(content: bytes):
    def setup(tmp, **_):
        return ["run", "--preset", str(_write(tmp / "my.yaml", content)), "--out", str(tmp / "out")]
    return setup


# (setup, a fragment the one-line message must contain)
CASES = {
    "lr infinite": (_run("out", "train.lr=inf"), "train.lr must be a finite positive number"),
    "lr nan": (_run("out", "train.lr=nan"), "train.lr must be a finite positive number, got nan"),
    "lr negative": (_run("out", "train.lr=-1"), "train.lr must be a finite positive"),
    "temperature zero": (_run("out", "model.temperature=0"), "model.temperature must be a finite positive"),
    "temperature negative": (_run("out", "model.temperature=-0.5"), "model.temperature must be"),
    "heads do not divide dim": (_run("out", "model.heads=5"), "model.dim=32 must be divisible by model.heads=5"),
    "unknown device": (_run("out", "train.device=tpu"), "train.device 'tpu'; choose from auto, cpu"),
    "absent CUDA": (_run("out", "train.device=cuda:0"), "train.device='cuda:0' but CUDA is not available"),
    "template with a named slot": (_run("out", "modalities.image.template={x}"),
                                   "modalities.image.template '{x}' must hold exactly one"),
    "template without a slot": (_run("out", "templates.audio=a sound"), "modalities.audio.template 'a sound' must hold"),
    "negative probe count": (_run("out", "probe.per_class=-1"), "probe.per_class must be at least 1, got -1"),
    "one sample per class": (_run("out", "data.n_per_class=1"), "data.n_per_class must be at least 3"),
    "negative memory": (_run("out", "method.name=er", "method.params.memory_size=-5"),
                        "method.params.memory_size must be a finite non-negative number, got -5"),
    "zero distillation temperature": (_run("out", "method.name=lwf", "method.params.temperature=0"),
                                      "method.params.temperature must be a finite positive"),
    "unknown method": (_run("out", "method.name=nosuch"), "nosuch"),
    "unknown method parameter": (_run("out", "method.name=er", "method.params.memry=3"), "has no parameter(s)"),
    "unknown key": (_run("out", "train.epochz=3"), "unknown config key 'train.epochz'"),
    "wrong type": (_run("out", "train.epochs=abc"), "config key 'train.epochs' expects int, got 'abc'"),
    "bad choice": (_run("out", "stream.order=sideways"), "stream.order 'sideways'; choose from"),
    "override without =": (_run("out", "train.lr"), "override 'train.lr' must look like section.key=value"),
    "missing weights directory": (_run("out", "encoders.image=image/clip@/no/such/dir"),
                                  "modalities.image.encoder: weights directory '/no/such/dir' does not exist"),
    "pickled encoder weights": (_pickled_weights, "pickled ['pytorch_model.bin'] are refused"),
    "missing folder dataset": (_run("out", "data.image=folder:/no/such/root"),
                               "modalities.image.data: folder '/no/such/root' does not exist"),
    "binary preset file": (_preset_file(bytes(range(256))), "my.yaml: not a text file"),
    "invalid YAML preset": (_preset_file(b"train: [unclosed"), "my.yaml: not valid YAML"),
    "unknown preset": (lambda tmp, **_: ["run", "--preset", "nope", "--out", str(tmp / "out")],
                       "unknown preset or missing file 'nope'"),
    "--out is a file": (_existing_file_out, "exists and is not a folder"),
    "--out under a file": (_out_under_file, "exists and is not a folder"),
    "--out holds other files": (_non_run_folder, "a folder that holds files but no run"),
    "another config in --out": (_other_config_in_out, "holds a run with a different config (2 tasks finished)"),
    "--seeds not integers": (lambda tmp, **_: ["compare", "--preset", "ci", "--seeds", "0,x", "--out", str(tmp / "c")],
                             "--seeds expects comma-separated integers"),
    "compare an unknown method": (lambda tmp, **_: ["compare", "--preset", "ci", "--methods", "nosuch",
                                                    "--out", str(tmp / "c")], "nosuch"),
    "tune with no budget": (lambda tmp, **_: ["tune", "--preset", "ci", "--budget", "0", "--out", str(tmp / "t")],
                            "--budget must be at least 1"),
    "report without a run": (lambda tmp, **_: ["report", str(tmp / "nothing")], "not a run directory"),
    "report a torn results.csv": (_report_torn, "results.csv: not a readable results table"),
    "report a foreign results.csv": (_report_foreign, "results.csv: not an mmcl_lab results table"),
    "resume without a run": (lambda tmp, **_: ["resume", str(tmp / "nothing")], "no config.yaml, not a run directory"),
    "resume an edited config": (_resume_edited, "config.yaml was edited after step 1 was checkpointed"),
    "resume without results.csv": (_resume_without_results, "lacks the rows of steps [-1, 0, 1]"),
    "resume with rows missing": (_resume_rows_missing, "lacks the rows of steps [0]"),
    "resume with every checkpoint corrupt": (_resume_all_checkpoints_corrupt, "every checkpoint is corrupt"),
    "resume a checkpoint of another model": (_resume_other_dim, "does not fit this model"),
    "resume a checkpoint of an older release": (_resume_older_format, "checkpoint format 1 from an older mmcl_lab"),
    "raw cache with a flipped byte": (_corrupt_cache("raw"), "unreadable cached dataset"),
    "feature cache with a flipped byte": (_corrupt_cache("features"), "contents do not match their checksum"),
    "feature cache holding NaN": (_corrupt_cache("features", flip=False), "holds NaN or infinite values"),
    "backbone with a flipped byte": (_corrupt_cache("backbone"), "delete it to pretrain again"),
    "class with too few files": (_folder_case("image", {"cat/0.png": None, "cat/a.png": b"x", "dog/0.png": b"x"}),
                                 "class 'cat' has 1 image files"),
    "corrupt image": (_folder_case("image", {f"{c}/{i}.png": b"not a png" for c in "ab" for i in range(3)}),
                      "a/0.png: cannot read as image"),
    "empty audio file": (_folder_case("audio", {f"{c}/{i}.wav": _wav(np.zeros(0, np.float32))
                                                for c in "ab" for i in range(3)}), "a/0.wav: cannot read as audio"),
    "NaN in audio": (_folder_case("audio", {f"{c}/{i}.wav": _wav(np.full(800, np.nan, np.float32))
                                            for c in "ab" for i in range(3)}), "a/0.wav: audio sample holds NaN"),
    "pickled depth map": (_folder_case("depth", {f"{c}/{i}.npy": _npy(np.array([{}], dtype=object), pickle=True)
                                                 for c in "ab" for i in range(3)}), "a/0.npy: cannot read as depth"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, tmp_path, cache_dir, ci_stream, partial_run,
                                                             monkeypatch, capsys):
    setup, fragment = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path, cache_dir=cache_dir, partial_run=partial_run, monkeypatch=monkeypatch)
    before = _snapshot(tmp_path)
    try:
        rc = cli.main(argv)
    except SystemExit as exit:  # argparse's own errors
        rc = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("mmcl-lab: error:") and "Traceback" not in err[0], err
    assert fragment in err[0], err[0]
    assert _snapshot(tmp_path) == before  # no half-written run, nothing saved lost or touched


def test_the_case_table_is_large_enough():
    assert len(CASES) >= 40


def test_readers_skip_os_metadata_and_scale_16_bit_images(tmp_path):
    from mmcl_lab.data.folder import read_folder
    for c in ("bright", "dark"):
        for i in range(3):
            _png16(_write(tmp_path / c / f"{i}.png", b""))
        _write(tmp_path / c / f"._{0}.png", b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata beside a file
        _write(tmp_path / c / ".DS_Store", b"\x00")
    _write(tmp_path / "__MACOSX" / "bright" / "._0.png", b"\x00")
    data = read_folder(tmp_path, "image")
    assert data.class_names == ("bright", "dark") and len(data) == 6
    assert 0 < data.x.mean() < 255 and data.x.max() > 200 and data.x.min() < 10  # scaled, not clipped to white


def test_a_diverged_run_can_be_retried_in_place(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([*RUN, str(out), "train.lr=1e12"]) == 2
    assert "loss is" in capsys.readouterr().err
    assert cli.main([*RUN, str(out)]) == 2  # the fixed value into the same folder: refused, and says how
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*RUN, str(out), "--overwrite"]) == 0
    assert Run(out).latest_step() == 7 and not list(out.rglob("*.tmp"))


def test_a_full_disk_names_the_file_and_keeps_the_finished_tasks(ci_cfg, ci_stream, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 15:  # well after task 0's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    assert cli.main([*RUN, str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert "No space left on device; free some space" in line and str(out) in line and "\n" not in line
    monkeypatch.setattr(utils.os, "replace", real)
    done = Run(out).latest_step()
    assert done is not None and done >= 0 and not list(out.rglob("*.tmp"))
    reference = run_stream(apply_overrides(ci_cfg, {"method.name": "finetune"}), tmp_path / "ref", ci_stream)
    pd.testing.assert_frame_equal(resume(out, ci_stream).results(), reference.results())


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(ci_cfg, ci_stream, partial_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(partial_run, run_dir)
    _flip_byte(run_dir / "checkpoints" / "step_001" / "model.safetensors")
    final = resume(run_dir, ci_stream).results()
    assert "step_001/model.safetensors: contents do not match their checksum" in capsys.readouterr().err
    reference = run_stream(apply_overrides(ci_cfg, {"method.name": "finetune"}), tmp_path / "ref", ci_stream)
    pd.testing.assert_frame_equal(final, reference.results())


def test_stale_temp_files_are_cleaned_on_the_next_start(ci_cfg, partial_run, ci_stream, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(partial_run, run_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: its temp files are leftovers
    leftovers = [_write(run_dir / f".results.csv.{pid}.abc.tmp", "half"),
                 _write(run_dir / "checkpoints" / "step_002" / f".model.safetensors.{pid}.x_y.tmp", "half")]
    staging = _write(tmp_path / f".run.{pid}.creating.tmp" / "config.yaml", "half").parent
    live = _write(run_dir / f".notes.{os.getpid()}.abc.tmp", "mine")  # a live writer's: kept
    resume(run_dir, ci_stream)
    assert not any(p.exists() for p in leftovers) and not staging.exists() and live.exists()
    cached = _write(Path(ci_cfg.data.cache_dir) / "features" / f".mnist-x.safetensors.{pid}.q.tmp", "half")
    build_stream(ci_cfg)
    assert not cached.exists()


def _cli_process(args: list[str], cache: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "MMCL_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "mmcl_lab.cli", *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, **kw)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line(cache_dir, ci_stream, tmp_path):
    out = tmp_path / "out"
    proc = _cli_process([*RUN, str(out), "train.epochs=400"], str(cache_dir))
    deadline = time.monotonic() + 120
    while not (out / "checkpoints").exists():  # training has begun
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_a_plain_script_on_an_empty_cache(tmp_path):
    script = tmp_path / "quickstart.py"  # no `if __name__ == "__main__":` guard, as a user would save it
    script.write_text("import mmcl_lab as mm\n"
                      "cfg = mm.load_config('ci', {'method.name': 'comm', 'stream.modalities': 'audio,image'})\n"
                      "run = mm.run_stream(cfg, mm.run_dir_for(cfg))\n"
                      "print(len(run.results()))\n")
    env = {**os.environ, "MMCL_CACHE": str(tmp_path / "empty_cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0
