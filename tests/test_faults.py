"""Bad input and faults at the command line: exit code 2, one line that names the file or key, no traceback, and
the working folder (run directories included) byte-for-byte as it was. Then the faults that happen mid-run:
divergence, a full disk, corrupt checkpoints, Ctrl-C, and a plain script on an empty cache."""

from __future__ import annotations

import errno
import hashlib
import json
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
from mmcl_lab.config import apply_overrides, from_yaml
from mmcl_lab.rundir import config_digest
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
    pattern = {"raw": "raw/mnist-*.npz", "features": "features/mnist-*/shard_*.safetensors",
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


def _project_folder(*extra):
    """A user's project folder that holds its own config.yaml, code and data: never a run to replace."""
    def setup(tmp, **_):
        _write(tmp / "project" / "config.yaml", "epochs: 3\nlr: 0.1\n")
        _write(tmp / "project" / "train.py", "print('my training script')\n")
        _write(tmp / "project" / "data" / "x.csv", "1,2\n")
        return [*RUN, str(tmp / "project"), *extra]
    return setup


def _out_symlink(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "real")
    (tmp / "link").symlink_to(tmp / "real", target_is_directory=True)
    return [*RUN, str(tmp / "link"), "--overwrite"]


def _symlinked_checkpoints(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    shutil.move(tmp / "run" / "checkpoints", tmp / "elsewhere")
    (tmp / "run" / "checkpoints").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return ["resume", str(tmp / "run")]


def _edited_before_any_checkpoint(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    shutil.rmtree(tmp / "run" / "checkpoints")
    cfg = tmp / "run" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 0.002", "lr: 0.003"))
    return ["resume", str(tmp / "run")]


def _report_torn_row(tmp, partial_run, **_):
    shutil.copytree(partial_run, tmp / "run")
    *rows, last = (tmp / "run" / "results.csv").read_text().rstrip("\n").split("\n")
    # cut inside the last row, whatever its length (a fixed cut once removed exactly one whole row)
    (tmp / "run" / "results.csv").write_text("\n".join([*rows, last[: len(last) // 2]]))
    return ["report", str(tmp / "run")]


def _audio_only_mp4(path: Path):
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def _truncated_mp4(path: Path):
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for k in range(16):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _npz(path: Path):
    with open(path, "wb") as f:
        np.savez(f, depth=np.ones((8, 8), np.float32))


def _figures(*options, browser: str | None = None):
    def setup(tmp, partial_run, monkeypatch, **_):
        shutil.copytree(partial_run, tmp / "run")
        if browser is not None:
            monkeypatch.setenv("BROWSER_PATH", browser)  # kaleido's Chromium, here one that is not there
        return ["figures", str(tmp / "run"), "--out", str(tmp / "run" / "figs"), *options]
    return setup


def _tensorboard_missing(tmp, monkeypatch, **_):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    return [*RUN, str(tmp / "out"), "train.tensorboard=true"]


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
    "template without a slot": (_run("out", "templates.audio=a sound"),
                                "modalities.audio.template 'a sound' must hold"),
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
    "tune with no budget": (lambda tmp, **_: ["tune", "--preset", "ci", "--trials", "0", "--out", str(tmp / "t")],
                            "--trials must be at least 1"),
    "tune with an unknown --vary": (lambda tmp, **_: ["tune", "--preset", "ci", "--vary", "order", "--out",
                                                      str(tmp / "t")], "--vary: unknown ['order']"),
    "report without a run": (lambda tmp, **_: ["report", str(tmp / "nothing")], "not a run directory"),
    "report a torn results.csv": (_report_torn, "results.csv: not a readable results table"),
    "report a foreign results.csv": (_report_foreign, "results.csv: not an mmcl_lab results table"),
    "resume without a run": (lambda tmp, **_: ["resume", str(tmp / "nothing")], "no config.yaml, not a run directory"),
    "resume an edited config": (_resume_edited, "config.yaml was edited after the run was created"),
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
    "--overwrite on a project folder with its own config.yaml": (_project_folder("--overwrite"),
                                                                 "project/config.yaml: "),
    "a project folder with its own config.yaml": (_project_folder(), "is not a run that mmcl_lab made"),
    "--out is a symbolic link": (_out_symlink, "the run folder is a symbolic link"),
    "a symbolic link inside the run": (_symlinked_checkpoints, "checkpoints: a symbolic link inside the run folder"),
    "config edited before any checkpoint": (_edited_before_any_checkpoint, "config.yaml was edited after the run was"),
    "report a torn last row": (_report_torn_row, "results.csv: a torn results table"),
    "negative data seed": (_run("out", "data.seed=-1"), "data.seed must be an integer in [0, 2**63), got -1"),
    "seed above 2**64": (_run("out", f"seed={2**65}"), "seed must be an integer in [0, 2**63)"),
    "duplicate YAML key": (_preset_file(b"train:\n  lr: 0.1\ntrain:\n  epochs: 2\n"), "my.yaml: not valid YAML"),
    "tune an unknown method": (lambda tmp, **_: ["tune", "--preset", "ci", "--methods", "x", "--out", str(tmp / "t")],
                               "--methods: no search space for ['x']"),
    "npz renamed .npy": (_folder_case("depth", {f"{c}/{i}.npy": _npz for c in "ab" for i in range(3)}),
                         "a/0.npy: cannot read as depth (ValueError: an .npz archive, not a .npy array"),
    "audio-only mp4": (_folder_case("video", {f"{c}/{i}.mp4": _audio_only_mp4 for c in "ab" for i in range(3)}),
                       "a/0.mp4: cannot read as video (ValueError: no video frames (the file has no video stream)"),
    "truncated mp4": (_folder_case("video", {f"{c}/{i}.mp4": _truncated_mp4 for c in "ab" for i in range(3)}),
                      "a/0.mp4: cannot read as video (InvalidDataError"),
    "1 Hz wav": (_folder_case("audio", {f"{c}/{i}.wav": _wav(np.zeros(5, np.float32), rate=1)
                                        for c in "ab" for i in range(3)}), "sample rate 1 Hz is below 1000 Hz"),
    "class-name clash": (_folder_case("image", {f"{c}/{i}.png": _png16 for c in ("rain_drops", "rain drops")
                                                for i in range(3)}), "both name the class 'rain drops'"),
    "figures without a run": (lambda tmp, **_: ["figures", str(tmp / "nothing")], "not a run directory"),
    "figures in an unknown format": (_figures("--formats", "pdf,jpg"), "--formats: jpg unknown; choose from png"),
    "figures without a Chromium": (_figures(browser="/no/such/chromium"), "figure files need kaleido>=1"),
    "TensorBoard without its package": (_tensorboard_missing, "train.tensorboard=true needs the tensorboard package"),
    "float16 on the CPU": (_run("out", "train.precision=fp16"), "train.precision=fp16 needs a CUDA device, not cpu"),
    "unknown precision": (_run("out", "train.precision=fp8"), "train.precision 'fp8'; choose from auto"),
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
    pixels = data.x.take(range(6))
    assert 0 < pixels.mean() < 255 and pixels.max() > 200 and pixels.min() < 10  # scaled, not clipped to white


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


def _interruptible(cmd: list[str], **kw) -> subprocess.Popen:
    """Popen with SIGINT at its default in the child. A shell's background job (`pytest ... &`, nohup) ignores
    SIGINT, and a child inherits that, so Ctrl-C would never reach it and the test would fail for its launcher."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler, not SIG_IGN: exec resets it
    try:
        return subprocess.Popen(cmd, **kw)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cli_process(args: list[str], cache: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "MMCL_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    return _interruptible([sys.executable, "-m", "mmcl_lab.cli", *args], env=env, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True, **kw)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line(cache_dir, ci_stream, tmp_path):
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    env = {**os.environ, "MMCL_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    with open(log, "w") as stderr:  # a file, not a pipe: only the process itself is waited for, never a pipe's holders
        proc = _interruptible([sys.executable, "-m", "mmcl_lab.cli", *RUN, str(out), "train.epochs=400"], env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while not (out / "checkpoints").exists():  # training has begun
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # still running: have faulthandler print where every thread is
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail(f"no exit 120 s after SIGINT; the process's threads:\n{log.read_text()[-6000:]}")
    err = log.read_text()
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


@pytest.mark.slow
def test_two_runs_on_one_out_at_once_one_proceeds_and_the_other_names_the_lock(cache_dir, ci_stream, tmp_path):
    out = tmp_path / "out"
    first = _cli_process([*RUN, str(out), "train.epochs=200"], str(cache_dir))
    lock = tmp_path / ".out.lock"
    deadline = time.monotonic() + 120
    while not lock.exists():  # the first run holds the folder
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    second = _cli_process([*RUN, str(out), "train.lr=0.003"], str(cache_dir))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and err.count("\n") == 1, err
    assert f"{lock}: {out} is being written by another mmcl-lab process (pid {first.pid})" in err
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert "lr: 0.002" in (out / "config.yaml").read_text()  # the folder is the first run's
    assert not lock.exists()  # released with the run


@pytest.mark.slow
def test_one_cache_filled_by_two_processes_at_once_holds_the_same_checksummed_features(tmp_path):
    cache = tmp_path / "shared_cache"
    script = ("import sys; import mmcl_lab as mm; from mmcl_lab.utils import tensors_digest\n"
              "stream = mm.build_stream(mm.load_config('ci', {'stream.modalities': 'image,audio'}))\n"
              "print(tensors_digest({str(t.id): t.train_x for t in stream}))\n")
    env = {**os.environ, "MMCL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert outputs[0][0] == outputs[1][0] and outputs[0][0].strip()  # both read the same features
    for f in cache.rglob("*.safetensors"):
        utils.read_tensor_file(f, "")  # every cached file reads back and matches its checksum
    assert not list(cache.rglob("*.tmp"))


def test_pickled_text_weights_are_refused_before_any_unpickler_runs(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "PWNED",))

    weights = tmp_path / "minilm"
    _write(weights / "config.json", '{"model_type": "bert"}')
    _write(weights / "pytorch_model.bin", pickle.dumps(Payload()))
    from mmcl_lab.encoders import create_encoder
    with pytest.raises(ValueError, match=r"no .safetensors weights; pickled \['pytorch_model.bin'\] are refused"):
        create_encoder(f"text/minilm@{weights}")
    assert not (tmp_path / "PWNED").exists()


def test_stale_temp_files_in_a_user_folder_named_as_the_cache_survive_resume(cache_dir, ci_cfg, partial_run, tmp_path):
    user = tmp_path / "home"  # data.cache_dir=~ or a shared MMCL_CACHE: a folder that is not only ours
    shutil.copytree(cache_dir, user)
    dead = 2**22 + 12345  # above the usual pid range: no such process
    theirs = [_write(user / f".x.{dead}.y.tmp", "mine"), _write(user / "notes" / f".draft.{dead}.z.tmp", "mine")]
    ours = _write(user / "features" / f".mnist-x.safetensors.{dead}.q.tmp", "half")
    shutil.copytree(partial_run, tmp_path / "run")
    cfg = tmp_path / "run" / "config.yaml"
    cfg.write_text(cfg.read_text().replace(f"cache_dir: {ci_cfg.data.cache_dir}", f"cache_dir: {user}"))
    (tmp_path / "run" / "provenance.json").write_text(json.dumps(
        {**json.loads((tmp_path / "run" / "provenance.json").read_text()),
         "config": config_digest(from_yaml(cfg))}))  # the same run, pointed at the user's folder
    resume(tmp_path / "run")
    assert all(p.read_text() == "mine" for p in theirs) and not ours.exists()


def test_a_checkpoint_state_without_its_rng_falls_back_to_the_one_before(ci_cfg, partial_run, tmp_path, capsys):
    shutil.copytree(partial_run, tmp_path / "run")
    state = tmp_path / "run" / "checkpoints" / "step_001" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "rng"}))
    resume(tmp_path / "run")
    assert "state.json: checkpoint state without its step or RNG states; resuming from the checkpoint before it" \
        in capsys.readouterr().err


def test_tuned_settings_that_are_missing_or_malformed_are_errors(tmp_path):
    from mmcl_lab.config import ConfigError, TUNED_FILE, tuned_overrides
    assert tuned_overrides("comm") and tuned_overrides("zeroshot") == {}  # a method that never trains has none
    with pytest.raises(ConfigError, match="tuned.yaml: no tuned settings to start from; run `mmcl-lab tune`"):
        tuned_overrides("comm", tmp_path / "tuned.yaml")
    with pytest.raises(ConfigError, match="no tuned settings for method 'comm'"):
        tuned_overrides("comm", _write(tmp_path / "some.yaml", "er: {train.lr: 0.001}\n"))
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping of method name"):
        tuned_overrides("comm", _write(tmp_path / "bad.yaml", "- comm\n- er\n"))
    assert TUNED_FILE.name == "tuned.yaml"
