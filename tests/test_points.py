"""The fifth modality, point clouds: registered from its own file, read from folders, encoded, and trained in a
stream beside the other four."""

import numpy as np
import pytest
import torch

from mmcl_lab.config import apply_overrides
from mmcl_lab.data import load_raw
from mmcl_lab.data.folder import read_folder
from mmcl_lab.encoders import create_encoder
from mmcl_lab.modalities import get_modality
from mmcl_lab.modalities.points import N_POINTS, depth_views
from mmcl_lab.run import run_stream
from mmcl_lab.streams import build_stream

TINY_POINTS = {"modalities.points.encoder": "points/tiny", "modalities.points.template": "{}"}


def test_point_clouds_are_centred_seeded_and_disjoint_from_their_corpus(cache_dir):
    raw = load_raw("point_clouds", "points", 4, 0, str(cache_dir))
    assert raw.x.shape == (32, N_POINTS, 3) and np.abs(raw.x.mean(1)).max() < 1e-5
    assert np.array_equal(raw.x, load_raw("point_clouds", "points", 4, 0, str(cache_dir)).x)
    assert not np.array_equal(raw.x, load_raw("point_clouds", "points", 4, 1, str(cache_dir)).x)
    corpus = load_raw("corpus_point_clouds", "points", 4, 0, str(cache_dir), shift=1.0)
    assert set(raw.class_names) < set(corpus.class_names)  # a wider vocabulary, the stream's inside
    rows = {row.tobytes() for row in raw.x}
    assert not any(row.tobytes() in rows for row in corpus.x)


def test_depth_views_see_each_axis_from_its_positive_side():
    cloud = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (1, 4, 3)
    views = depth_views(cloud, 5)  # (1, 3, 5, 5)
    assert views.shape == (1, 3, 5, 5) and views.min() == 0.0 and views.max() == 1.0
    assert views[0, 0, 2, 2] == 1.0  # along x, the centre pixel holds the nearest point, x = +1
    assert views[0, 2, 2, 2] == 1.0 and views[0, 1, 2, 2] == 1.0  # and the same along z and y
    assert [int((v > 0).sum()) for v in views[0]] == [3, 4, 4]  # along x, (+-1, 0, 0) share the centre pixel


def test_a_folder_of_point_files_reads_as_points(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("rod", "ball"):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            np.save(tmp_path / name / f"{i}.npy", rng.normal(size=(700 + i, 3)).astype(np.float32))
    raw = read_folder(tmp_path, "points")
    assert raw.x.take(range(6)).shape == (6, N_POINTS, 3) and raw.class_names == ("ball", "rod")
    np.save(tmp_path / "rod" / "3.npy", np.zeros((5, 2)))
    raw = read_folder(tmp_path, "points")
    with pytest.raises(ValueError, match=r"3.npy: cannot read as points .*\(P, 3\) array"):
        raw.x.take(range(len(raw)))


def test_both_encoders_give_twelve_tokens(cache_dir):
    raw = load_raw("point_clouds", "points", 2, 0, str(cache_dir))
    for spec, dim in (("points/tiny", 32), ("points/efficientnet_lite0", 1280)):
        enc = create_encoder(spec)
        with torch.no_grad():
            tokens = enc(enc.preprocess(raw.x[:3]))
        assert tokens.shape == (3, 12, dim) and torch.isfinite(tokens).all()


def test_points_train_beside_the_four_bundled_modalities(ci_cfg, tmp_path):
    modalities = "image,audio,depth,video,points"
    cfg = apply_overrides(ci_cfg, {"stream.modalities": modalities, **TINY_POINTS})
    assert list(cfg.modalities) == ["image", "audio", "depth", "video", "points"]  # filled from its registration
    stream = build_stream(cfg)
    assert [t.modality for t in stream][:5] == modalities.split(",") and len(stream) == 10
    run = run_stream(cfg, tmp_path / "five", stream)
    results = run.results()
    assert set(results.modality) == set(modalities.split(",")) and run.latest_step() == 9
    known = results[(results.setting == "known") & (results.metric == "acc") & (results.task == 4)]  # first points task
    before, after = (known[known.step == s].value.item() for s in (-1, 4))
    assert after > max(before + 0.1, 1 / 4), (before, after)  # training it lifts it above the backbone and chance
    assert get_modality("points").colour not in {get_modality(m).colour for m in ("image", "audio", "depth", "video")}
