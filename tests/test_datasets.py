"""The readers of the standard releases on tiny fakes of their layouts, lazy decoding, the manifest-keyed cache,
sharded extraction that resumes after a kill, and class orders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import fakes
from mmcl_lab import cli
from mmcl_lab.config import load_config
from mmcl_lab.data import load_raw, template_for
from mmcl_lab.data.ucf101 import words
from mmcl_lab.encoders import create_encoder
from mmcl_lab.features import ShardedTokens, cached_features
from mmcl_lab.streams import build_stream


def test_esc50_reads_the_official_folds_and_categories(tmp_path):
    root = fakes.esc50(tmp_path / "ESC-50-master")
    raw = load_raw(f"esc50:{root}?fold=2", "audio", 0, 0)
    assert raw.class_names == ("dog", "rain", "chirping birds")  # in target order, as published
    assert raw.lazy and raw.sample_rate == 22050 and template_for("", raw) == "the sound of {}"
    test_files = {f for f, part in zip(raw.x.ids, raw.split) if part == "test"}
    assert test_files == {f for f in raw.x.ids if f.startswith("audio/2-")}  # fold 2 and nothing else
    assert raw.x[0].shape == (110250,)  # 44.1 kHz decoded once, to the modality's rate
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['folds'\]; esc50 takes fold"):
        load_raw(f"esc50:{root}?folds=2", "audio", 0, 0)
    (root / "meta" / "esc50.csv").write_text("filename,target\n")
    with pytest.raises(ValueError, match=r"esc50.csv: columns \['fold', 'category'\] missing"):
        load_raw(f"esc50:{root}", "audio", 0, 0)


def test_ucf101_uses_the_official_lists_and_keeps_groups_on_one_side(tmp_path):
    videos = fakes.ucf101(tmp_path)
    raw = load_raw(f"ucf101:{videos}", "video", 0, 0)
    assert raw.class_names == ("apply eye makeup", "yo yo", "archery") and words("PlayingDaf") == "playing daf"
    test = [f for f, part in zip(raw.x.ids, raw.split) if part == "test"]
    listed = (tmp_path / "ucfTrainTestlist" / "testlist01.txt").read_text().split()
    assert sorted(test) == sorted(listed) and all("_g01_" in f for f in test)  # CRLF lines read cleanly
    assert raw.x[0].shape == (8, 64, 64)
    cfg = load_config("ci", {"modalities.video.data": f"ucf101:{videos}", "stream.modalities": "video",
                             "stream.tasks_per_modality": 1, "modalities.video.encoder": "video/tiny"})
    task = build_stream(cfg, progress=False)[0]
    fit, val = set(raw.groups[task.train_index]), set(raw.groups[task.val_index])
    assert fit and val and not fit & val  # validation is carved from the train list by whole groups
    assert set(raw.split[task.test_index]) == {"test"}


def test_nyu_depth_v2_reads_the_matlab_73_file(tmp_path):
    path = fakes.nyu_depth_v2(tmp_path)
    with pytest.warns(UserWarning, match="classes left out .*: study"):
        raw = load_raw(f"nyu_depth_v2:{path}", "depth", 0, 0)
    assert raw.class_names == ("bedroom", "kitchen", "living room")  # references to char arrays decoded
    depth = raw.x[0]
    assert depth.shape == (36, 48) and depth.dtype == np.float32 and depth[0, 0] == 0  # transposed; NaN -> 0
    assert list(np.flatnonzero(raw.split == "test")) == [0, 5, 10]  # splits.mat's 1-based testNdxs


def test_sun_rgbd_undoes_the_bit_rotation_and_reads_allsplit(tmp_path):
    base = fakes.sun_rgbd(tmp_path)
    raw = load_raw(f"sun_rgbd:{base}", "depth", 0, 0)
    assert raw.class_names == ("bathroom", "office") and raw.x[0].shape == (30, 40)
    assert 0.5 <= raw.x[0].min() and raw.x[0].max() <= 5.0  # metres, not rotated millimetres
    assert sorted(np.array(raw.x.ids)[raw.split == "test"]) == ["kv1/NYUdata/NYU0001/depth/NYU0001.png",
                                                                 "kv1/NYUdata/NYU0005/depth/NYU0005.png"]


def test_imagefolder_tests_on_val_names_synsets_and_keeps_colour(tmp_path):
    root = fakes.imagenet(tmp_path / "imagenet")
    raw = load_raw(f"imagefolder:{root}", "image", 0, 0)
    assert raw.class_names == ("tench", "goldfish", "English springer")
    assert set(np.array(raw.x.ids)[raw.split == "test"]) == {f"val/ILSVRC2012_val_{i:08d}.JPEG" for i in
                                                             (0, 1, 10, 11, 20, 21)}
    first = raw.x[0]
    assert first.shape == (30, 40, 3) and first[..., 0].mean() > 150 > first[..., 1].mean()  # red, own size
    from mmcl_lab.modalities.image import conform_image
    assert conform_image(first, 224).shape == (224, 224, 3)  # the encoder's resolution, in colour


def test_n_per_class_draws_files_by_seed_not_the_first_in_order(tmp_path):
    root = fakes.imagenet(tmp_path / "imagenet", per_class=8)
    kept = {seed: load_raw(f"imagefolder:{root}", "image", 4, seed).x.ids for seed in (0, 1)}
    assert kept[0] != kept[1] and all(len(ids) == 12 for ids in kept.values())


def test_a_ci_run_on_each_fake_layout_through_the_cli(tmp_path):
    data = {"audio": f"esc50:{fakes.esc50(tmp_path / 'esc')}", "video": f"ucf101:{fakes.ucf101(tmp_path / 'ucf')}",
            "image": f"imagefolder:{fakes.imagenet(tmp_path / 'inet')}",
            "depth": f"nyu_depth_v2:{fakes.nyu_depth_v2(tmp_path / 'nyu')}"}
    runs = [[f"data.{m}={spec}" for m, spec in data.items()] + ["stream.tasks_per_modality=1"],
            [f"data.depth=sun_rgbd:{fakes.sun_rgbd(tmp_path / 'sun')}", "stream.modalities=depth",
             "stream.tasks_per_modality=1"]]
    for i, overrides in enumerate(runs):
        out = tmp_path / f"run{i}"
        with pytest.warns(UserWarning) if i == 0 else _nothing():  # NYU's rare scene type is named
            assert cli.main(["run", "--preset", "ci", "--out", str(out), *overrides]) == 0
        results = pd.read_csv(out / "results.csv")
        assert results["step"].max() == (3 if i == 0 else 0) and results["value"].notna().all()
        manifest = pd.read_csv(out / "manifest.csv")
        assert set(manifest["part"]) <= {"fit", "val", "test", "unused"} and manifest["bytes"].gt(0).all()
    manifest = pd.read_csv(tmp_path / "run0" / "manifest.csv")
    esc = manifest[manifest.modality == "audio"]
    assert set(esc[esc.part == "test"]["sample"].str[:8]) == {"audio/1-"}  # fold 1 tests by default


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_warm_run_decodes_no_raw_file(tmp_path, monkeypatch):
    import mmcl_lab.data.files as files
    from test_data import make_folders
    root = make_folders(tmp_path / "images", "image", classes=("cat", "dog", "owl"), n=4)
    calls = []
    real = files.decode_file
    monkeypatch.setattr(files, "decode_file", lambda *a: calls.append(a[0]) or real(*a))
    cfg = load_config("ci", {"modalities.image.data": f"folder:{root}", "stream.modalities": "image",
                             "stream.tasks_per_modality": 1, "encoders.workers": 0,
                             "data.cache_dir": str(tmp_path / "cache")})
    first = build_stream(cfg, progress=False)
    assert len(calls) == 12  # each file decoded once, by extraction
    calls.clear()
    second = build_stream(cfg, progress=False)
    assert calls == [] and torch.equal(first[0].train_x, second[0].train_x)  # warm: the manifest is the key
    os.utime(root / "cat" / "0.png", ns=(1, 1))  # a touched file is a changed dataset
    build_stream(cfg, progress=False)
    assert len(calls) == 12


KILLED_EXTRACTION = textwrap.dedent("""
    import os, signal, sys
    import mmcl_lab.features as features
    from mmcl_lab.data import load_raw
    from mmcl_lab.encoders import create_encoder
    written, kill_after = [], int(sys.argv[2])
    real = features.atomic_write_bytes
    def write(path, data):
        real(path, data)
        written.append(path)
        if len(written) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # killed between two shards
    features.atomic_write_bytes = write
    raw = load_raw("mnist", "image", 20, 0, sys.argv[1])
    features.cached_features(create_encoder("image/tiny"), raw, sys.argv[1], batch_size=16, shard_rows=32,
                             progress=False)
""")


def test_a_killed_extraction_resumes_at_the_next_unfinished_shard(tmp_path, monkeypatch):
    import mmcl_lab.features as features
    cache = tmp_path / "cache"
    kill_after = int(np.random.default_rng().integers(1, 7))  # 200 samples in shards of 32: 7 shards
    proc = subprocess.run([sys.executable, "-c", KILLED_EXTRACTION, str(cache), str(kill_after)],
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    shards = sorted((cache / "features").glob("mnist-*/shard_*.safetensors"))
    assert len(shards) == kill_after
    before = {p: p.stat().st_mtime_ns for p in shards}
    encoded = []
    real = features._encoded
    monkeypatch.setattr(features, "_encoded", lambda enc, raw, batches, *a: (encoded.extend(batches),
                                                                             real(enc, raw, batches, *a))[1])
    raw = load_raw("mnist", "image", 20, 0, str(cache))
    enc = create_encoder("image/tiny")
    resumed = cached_features(enc, raw, str(cache), batch_size=16, shard_rows=32, progress=False)
    assert min(i for b in encoded for i in b) == 32 * kill_after  # only the unfinished shards were encoded
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the finished ones were kept as they were
    whole = cached_features(enc, raw, str(tmp_path / "fresh"), batch_size=16, shard_rows=32, progress=False)
    assert torch.equal(resumed, whole)


def test_features_left_in_shards_train_exactly_as_in_memory(tmp_path):
    from mmcl_lab.run import run_stream
    base = {"stream.modalities": "image,audio", "encoders.shard_rows": 64}
    lazy_cfg = load_config("ci", {**base, "encoders.in_memory_mb": 0})
    stream = build_stream(lazy_cfg, progress=False)
    assert isinstance(stream[0].train_x, ShardedTokens) and len(stream[0].train_x.shards) > 1
    eager = run_stream(load_config("ci", base), tmp_path / "eager")
    lazy = run_stream(lazy_cfg, tmp_path / "lazy", stream=stream)
    assert (lazy.path / "results.csv").read_bytes() == (eager.path / "results.csv").read_bytes()


def test_class_orders_and_explicit_task_lists(ci_cfg):
    from mmcl_lab.streams import class_chunks
    names = tuple(f"c{i}" for i in range(6))
    listed = class_chunks(ci_cfg, "image", names)
    seeded = class_chunks(load_config("ci", {"stream.class_order": "seeded"}), "image", names)
    assert [c.tolist() for c in listed] == [[0, 1, 2], [3, 4, 5]]
    order = np.concatenate(seeded).tolist()
    assert sorted(order) == list(range(6)) and order != list(range(6))
    explicit = load_config("ci", {"modalities.image.task_classes": "c5|c0,c2"})
    assert [c.tolist() for c in class_chunks(explicit, "image", names)] == [[5, 0], [2]]
    for bad, match in (("c5|c9", r"task_classes\[0\]: \['c9'\] not among"), ("c1,c1", r"\['c1'\] already in")):
        with pytest.raises(ValueError, match=match):
            class_chunks(load_config("ci", {"modalities.image.task_classes": bad}), "image", names)
