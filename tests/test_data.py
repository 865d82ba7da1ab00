import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import fakes
from mmcl_lab.config import apply_overrides
from mmcl_lab.data import load_raw, split_indices
from mmcl_lab.data.folder import read_folder
from mmcl_lab.registry import DATASETS
from mmcl_lab.streams import build_stream


@pytest.mark.parametrize("name,modality,classes,shape", [
    ("mnist", "image", 10, (28, 28)), ("moving_digits", "video", 8, (8, 48, 48)),
    ("spoken_words", "audio", 10, (26460,)), ("shapes", "depth", 8, (48, 48))])
def test_bundled_generators(name, modality, classes, shape, cache_dir):
    raw = load_raw(name, modality, 3, 0, str(cache_dir))
    assert raw.modality == modality and len(raw.class_names) == classes and raw.x.shape[1:] == shape
    assert np.bincount(raw.y).tolist() == [3] * classes
    again = load_raw(name, modality, 3, 0, str(cache_dir))  # from the on-disk cache
    assert np.array_equal(raw.x, again.x) and np.array_equal(raw.y, again.y)
    assert raw.x.std() > 0  # real signal, not blank


@pytest.mark.parametrize("name", ["mnist", "moving_digits", "shapes", "spoken_words"])
def test_generation_is_seeded(name):
    a, b, c = (DATASETS.get(name)(2, s) for s in (0, 0, 1))
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


def test_depth_noise_never_shifts_the_random_stream_of_later_samples(monkeypatch):
    """A ray that grazes an edge can hit on one machine and miss on another: that must change its own pixel, not the
    poses, labels and noise of every later sample (the noise was once drawn per hit pixel)."""
    from mmcl_lab.data import shapes

    def posed(hit_fraction):
        def render(mesh, size, distance, **pose):
            depth = np.zeros((size, size), np.float32)
            depth.flat[:int(hit_fraction * size * size)] = distance
            return depth
        monkeypatch.setattr(shapes, "render_depth", render)
        return shapes.render_shapes(shapes.SHAPES[:2], 3, np.random.default_rng(0), size=8)

    (a, _), (b, _) = posed(0.5), posed(0.25)
    assert np.array_equal(a[:, 4:, :], b[:, 4:, :])  # where both miss (rows 4-7), both are background ...
    assert np.array_equal(a[:, :2, :], b[:, :2, :])  # ... and where both hit (rows 0-1), the same depth and noise


def test_split_is_stratified_and_disjoint():
    y = np.repeat(np.arange(4), 10)
    train, test = split_indices(y, 0.3, 0)
    assert not set(train) & set(test) and len(train) + len(test) == 40
    assert np.bincount(y[test]).tolist() == [3, 3, 3, 3]


def make_folders(root, modality, classes=("cat", "dog"), n=3):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            if modality == "image":
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
            elif modality == "audio":
                sf.write(root / c / f"{i}.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
            elif modality == "depth":
                np.save(root / c / f"{i}.npy", rng.uniform(0.5, 3, (30, 40)).astype(np.float32))
            else:
                fakes.clip(root / c / f"{i}.mp4", rng, width=32, height=32, frames=12, rate=10)
    return root


@pytest.mark.parametrize("modality,shape", [("image", (40, 30, 3)), ("audio", (110250,)), ("depth", (30, 40)),
                                            ("video", (8, 64, 64))])
def test_folder_dataset_reads_every_modality(tmp_path, modality, shape):
    raw = read_folder(make_folders(tmp_path / modality, modality), modality)
    assert raw.lazy and raw.class_names == ("cat", "dog") and raw.x.take(range(len(raw))).shape == (6, *shape)
    assert np.bincount(raw.y).tolist() == [3, 3]


def test_folder_dataset_in_a_stream(tmp_path, ci_cfg):
    root = make_folders(tmp_path / "imgs", "image", classes=("apple_pie", "boat", "cloud", "door"), n=4)
    cfg = apply_overrides(ci_cfg, {"data.image": f"folder:{root}", "stream.modalities": "image"})
    stream = build_stream(cfg)
    assert stream.class_names == ("apple pie", "boat", "cloud", "door") and len(stream) == 2
