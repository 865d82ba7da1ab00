"""Bad input gets an error that names what was wrong -- never a crash deep inside torch."""

import pickle

import numpy as np
import pytest
import torch
import yaml

from conftest import head
from mmcl_lab.features import cached_features
from mmcl_lab.config import ConfigError, MethodConfig, apply_overrides, from_yaml, load_config
from mmcl_lab.data import RawData, load_raw
from mmcl_lab.data.folder import read_folder
from mmcl_lab.encoders import create_encoder
from mmcl_lab.methods import Context, create_method, cross_entropy
from mmcl_lab.run import load_tensors, resume, run_stream
from mmcl_lab.streams import Task
from mmcl_lab.train import train_task


def raw(**kw):
    base = dict(name="toy", modality="image", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 0, 1, 1]),
                class_names=("a", "b"))
    return RawData(**{**base, **kw})


def folder_with(tmp_path, files):
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is not None:
            path.write_bytes(content)
    return tmp_path


RAW_CASES = {
    "unknown modality": (dict(modality="smell"), "unknown modality 'smell'"),
    "wrong array rank": (dict(x=np.zeros((4, 8), np.uint8)),
                         r"must be \(N, H, W\) uint8 grey \(3 dimensions\), got shape"),
    "label outside class list": (dict(y=np.array([0, 0, 1, 5])), r"labels must lie in \[0, 1\], found 0..5"),
    "duplicate class names": (dict(class_names=("a", "a")), "duplicate class names"),
    "class without a name": (dict(class_names=("a", " ")), "every class needs a non-empty name"),
    "empty class": (dict(y=np.array([0, 0, 0, 0])), r"classes without samples: \['b'\]"),
    "NaN signal": (dict(x=np.full((4, 8, 8), np.nan, np.float32)), "NaN or infinite"),
    "label count mismatch": (dict(y=np.array([0, 1])), "4 samples but 2 labels"),
}


@pytest.mark.parametrize("case", RAW_CASES)
def test_raw_data_validation(case):
    kwargs, match = RAW_CASES[case]
    with pytest.raises(ValueError, match=match):
        raw(**kwargs)


def decode_all(raw):
    """Every sample of a reader's dataset decoded (readers only list files; decoding names a bad one)."""
    return [raw.x[i] for i in range(len(raw))]


def test_corrupt_image_names_the_file(tmp_path):
    root = folder_with(tmp_path, {**{f"cat/{i}.png": b"not a png at all" for i in range(3)},
                                  **{f"dog/{i}.png": b"x" for i in range(3)}})
    with pytest.raises(ValueError, match=r"cat/0.png: cannot read as image"):
        decode_all(read_folder(root, "image"))


def test_corrupt_audio_names_the_file(tmp_path):
    root = folder_with(tmp_path, {f"rain/{i}.wav": b"RIFF....garbage" for i in range(3)})
    with pytest.raises(ValueError, match=r"rain/0.wav: cannot read as audio"):
        decode_all(read_folder(root, "audio"))


def test_empty_class_folder_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    for i in range(3):
        np.save(tmp_path / "cat" / f"{i}.npy", np.ones((4, 4)))
    (tmp_path / "dog").mkdir()
    with pytest.raises(ValueError, match="class 'dog' has 0 depth files"):
        read_folder(tmp_path, "depth")


def test_pickled_npy_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    for i in range(3):
        np.save(tmp_path / "cat" / f"{i}.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="0.npy: cannot read as depth.*allow_pickle"):
        decode_all(read_folder(tmp_path, "depth"))


def test_missing_folder_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_folder(tmp_path / "nope", "image")


def test_wrong_feature_shape_is_refused_before_torch(ci_stream, ci_backbone):
    model = ci_backbone.model(ci_stream)
    task = ci_stream[0]
    with pytest.raises(ValueError, match=r"must be \(B, <=4, 32\), got \(2, 4, 7\)"):
        model.embed(torch.zeros(2, 4, 7), task.feature_space)
    with pytest.raises(KeyError, match="feature space 'thermal/x' is unknown"):
        model.embed(torch.zeros(2, 4, 32), "thermal/x")


def test_labels_outside_the_task_classes(ci_stream, ci_backbone):
    model = ci_backbone.model(ci_stream)
    z = torch.nn.functional.normalize(torch.randn(2, model.class_text.shape[1]), dim=-1)
    with pytest.raises(ValueError, match=r"labels \[7\] are outside the classes \[0, 1\]"):
        cross_entropy(model, z, torch.tensor([0, 7]), [0, 1])


def test_empty_task_is_refused(ci_cfg, ci_stream, ci_backbone):
    t = ci_stream[0]
    empty = Task(t.id, t.modality, t.feature_space, t.classes, t.class_names, t.train_x[:0], t.train_y[:0],
                 t.test_x, t.test_y, t.train_index[:0], t.test_index, t.probe)
    model = ci_backbone.model(ci_stream)
    method = create_method(MethodConfig("finetune"))
    method.setup(model, Context.replay(ci_stream, 0))
    with pytest.raises(ValueError, match="task 0 \\(image\\) has no training samples"):
        train_task(model, method, empty, ci_cfg.train, torch.Generator(), torch.device("cpu"))


def test_nan_features_stop_training_and_keep_the_last_checkpoint(ci_cfg, ci_stream, tmp_path):
    from mmcl_lab.train import TrainingDiverged
    stream = head(ci_stream, 3)
    t = stream.tasks[1]
    stream.tasks[1] = Task(t.id, t.modality, t.feature_space, t.classes, t.class_names,
                           torch.full_like(t.train_x, float("nan")), t.train_y, t.test_x, t.test_y,
                           t.train_index, t.test_index, t.probe)
    with pytest.raises(TrainingDiverged, match="task 1 \\(audio\\), epoch 0: loss is nan"):
        run_stream(ci_cfg, tmp_path / "nan", stream)
    from mmcl_lab.run import Run
    assert Run(tmp_path / "nan").latest_step() == 0  # task 0's checkpoint is intact
    assert set(Run(tmp_path / "nan").results().step) == {-1, 0}


def test_cache_written_by_another_encoder_version(cache_dir):
    from safetensors import safe_open
    from safetensors.torch import save_file
    enc = create_encoder("image/tiny")
    data = load_raw("mnist", "image", 2, 5, str(cache_dir))
    cached_features(enc, data, str(cache_dir), progress=False)
    path = max((cache_dir / "features").glob("mnist-*/shard_00000.safetensors"), key=lambda p: p.stat().st_mtime)
    with safe_open(str(path), "pt") as f:
        tokens = f.get_tensor("tokens")
    save_file({"tokens": tokens}, str(path), metadata={"key": '{"encoder": "image/tiny|v0-old"}'})
    with pytest.raises(ValueError, match="shard_00000.safetensors: written for .*v0-old.*Delete the folder"):
        cached_features(enc, data, str(cache_dir), progress=False)


def test_pickled_checkpoint_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="pickled checkpoints are refused"):
        load_tensors(evil)
    disguised = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, disguised)  # a torch pickle wearing a safetensors name
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_tensors(disguised)


def test_bad_config_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.epochz'\]"):
        from_yaml(tmp_path / "unknown.yaml")
    with pytest.raises(ConfigError, match="unknown preset or missing file 'nope.yaml'"):
        load_config("nope.yaml")


def test_resume_without_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.yaml, not a run directory"):
        resume(tmp_path)


def test_encoder_for_the_wrong_modality(ci_cfg):
    with pytest.raises(ConfigError, match="modalities.image.encoder='audio/tiny' encodes audio, not image"):
        apply_overrides(ci_cfg, {"encoders.image": "audio/tiny", "stream.modalities": "image"})  # the older key
    with pytest.raises(ConfigError, match="modalities.image.data='shapes' is depth data, not image"):
        apply_overrides(ci_cfg, {"modalities.image.data": "shapes"})


def test_dataset_for_the_wrong_modality(cache_dir):
    with pytest.raises(ValueError, match="dataset 'shapes' is depth data, but was configured for image"):
        load_raw("shapes", "image", 2, 0, str(cache_dir))
