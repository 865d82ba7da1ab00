"""The real-model adapters (CLIP, CLAP, binding towers) against tiny random checkpoints that these tests write, each
with a processor that differs from the defaults: the adapters must give what transformers' own pipeline gives."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcl_lab.config import ConfigError, load_config
from mmcl_lab.encoders import create_encoder
from mmcl_lab.encoders.tiny_checkpoints import save_tiny_binding, save_tiny_clap, save_tiny_clip, save_tiny_open_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"clip": save_tiny_clip(root / "clip"), "clap": save_tiny_clap(root / "clap"),
            "binding": save_tiny_binding(root / "binding")}


def _pooled(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def test_clip_adapter_gives_the_checkpoints_own_projected_embeddings(tiny):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny["clip"]).eval(), CLIPProcessor.from_pretrained(tiny["clip"])
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 36, 3), dtype=np.uint8)
    inputs = processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")
    reference = _pooled(model.get_image_features(**inputs))  # (3, 16): projected
    for depth in (0, 2):
        enc = create_encoder(f"image/clip@{tiny['clip']}", depth)
        tokens = enc(enc.preprocess(images))
        assert tokens.shape == ((3, 1, 16) if depth == 0 else (3, 17, 32))
        z = tokens[:, 0] if depth == 0 else enc.top()(tokens)
        torch.testing.assert_close(z, reference)
    # a hand-written default (bilinear to the model's size, CLIP's mean and std) gives other pixels
    default = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, size=(32, 32), mode="bilinear")
    default = (default - torch.tensor([0.4815, 0.4578, 0.4082]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1)
    assert (default - inputs["pixel_values"]).abs().max() > 0.5
    text = create_encoder(f"text/clip@{tiny['clip']}").encode(["a dog", "a cat"])
    ids = processor.tokenizer(["a dog", "a cat"], padding=True, return_tensors="pt")
    torch.testing.assert_close(text, F.normalize(_pooled(model.get_text_features(**ids)), dim=-1))
    assert enc.text_tower() is not None and enc.top().log_scale == pytest.approx(float(model.logit_scale))


@torch.no_grad()
def test_clap_adapter_reads_at_its_extractors_rate_and_matches_the_checkpoint(tiny, tmp_path):
    import soundfile as sf
    from transformers import ClapModel, ClapProcessor

    from mmcl_lab.data.files import FileSamples

    model, processor = ClapModel.from_pretrained(tiny["clap"]).eval(), ClapProcessor.from_pretrained(tiny["clap"])
    waves = (0.1 * np.random.default_rng(1).standard_normal((2, 16000))).astype(np.float32)
    feats = processor(audio=list(waves), sampling_rate=16000, return_tensors="pt")
    reference = _pooled(model.get_audio_features(input_features=feats["input_features"]))  # normalised
    for depth in (0, 2):
        enc = create_encoder(f"audio/clap@{tiny['clap']}", depth)
        assert enc.sample_rate == 16000  # the extractor's, not LAION's default 48 kHz
        tokens = enc(enc.preprocess(waves, 16000))
        z = tokens[:, 0] if depth == 0 else enc.top()(tokens)
        torch.testing.assert_close(F.normalize(z, dim=-1), reference)
    sf.write(tmp_path / "a.wav", waves[0].repeat(3)[:44100], 44100)
    samples = FileSamples(tmp_path, ["a.wav"], "audio")
    assert samples[0].shape == (22050 * 5,) and samples.at_rate(16000)[0].shape == (16000 * 5,)
    text = create_encoder(f"text/clap@{tiny['clap']}").encode(["rain"])
    ids = processor.tokenizer(["rain"], return_tensors="pt")
    torch.testing.assert_close(text, F.normalize(_pooled(model.get_text_features(**ids)), dim=-1))


def test_prompts_inside_the_towers_move_the_output_and_get_gradients(tiny):
    for spec, x in ((f"image/clip@{tiny['clip']}", np.zeros((2, 32, 32), np.uint8) + 90),
                    (f"audio/clap@{tiny['clap']}", np.ones((2, 16000), np.float32) * 0.05)):
        enc = create_encoder(spec, 2)
        with torch.no_grad():
            tokens = enc(enc.preprocess(x, 16000))
        top = enc.top()
        prompts = torch.randn(2, 2, 3, top.width, requires_grad=True)  # (B, D, L, W)
        z = top(tokens, prompts)
        assert not torch.allclose(z, top(tokens)), spec
        z.sum().backward()
        assert prompts.grad is not None and prompts.grad.abs().sum() > 0, spec


def test_binding_towers_file_and_its_errors(tiny, tmp_path):
    enc = create_encoder(f"depth/binding@{tiny['binding']}", 1)
    tokens = enc(enc.preprocess(np.random.default_rng(0).random((2, 30, 30)).astype(np.float32)))
    assert tokens.shape == (2, 17, 32) and enc.top()(tokens).shape == (2, 16)
    assert enc.text_tower().encode(["kitchen"]).shape == (1, 16)
    assert enc.top().log_scale == pytest.approx(np.log(50.0))
    with pytest.raises(ValueError, match="'towers' has no 'audio' entry"):
        create_encoder(f"audio/binding@{tiny['binding']}")
    bad = tmp_path / "towers.yaml"
    bad.write_text("text: t\ntowers: {image: i}\nscale: 3\n")
    with pytest.raises(ValueError, match=r"towers.yaml: unknown keys \['scale'\]"):
        create_encoder(f"image/binding@{bad}")
    with pytest.raises(ValueError, match="model.prompt_depth=9: the CLIP vision tower .* has 4 layers"):
        create_encoder(f"image/clip@{tiny['clip']}", 9)


def _open_clip():
    """open_clip (the open_clip extra, part of [test]): skipped where it is missing, except in CI, which installs it."""
    if os.environ.get("CI"):
        import open_clip
        return open_clip
    return pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    _open_clip()
    return save_tiny_open_clip(tmp_path_factory.mktemp("tiny") / "open_clip")


@torch.no_grad()
def test_open_clip_adapter_gives_the_checkpoints_own_embeddings(tiny_open_clip):
    from PIL import Image

    open_clip = _open_clip()
    where = f"local-dir:{tiny_open_clip}"
    model, _, transform = open_clip.create_model_and_transforms(where)
    tokenizer = open_clip.get_tokenizer(where)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 36, 3), dtype=np.uint8)
    pixels = torch.stack([transform(Image.fromarray(i)) for i in images])
    reference = model.eval().encode_image(pixels)  # (3, 16): projected
    for depth in (0, 2):
        enc = create_encoder(f"image/openclip@{tiny_open_clip}", depth)
        tokens = enc(enc.preprocess(images))
        assert tokens.shape == ((3, 1, 16) if depth == 0 else (3, 17, 32))
        torch.testing.assert_close(tokens[:, 0] if depth == 0 else enc.top()(tokens), reference)
    # the checkpoint's transform squashes to 32 px with its own mean and std: CLIP's defaults give other pixels
    default = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, size=(32, 32), mode="bicubic")
    default = (default - torch.tensor([0.4815, 0.4578, 0.4082]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1)
    assert (default - pixels).abs().max() > 0.5
    text = enc.text_tower().encode(["a dog", "a cat"])
    torch.testing.assert_close(text, F.normalize(model.encode_text(tokenizer(["a dog", "a cat"])), dim=-1))
    assert enc.top().log_scale == pytest.approx(model.logit_scale.item())
    video = create_encoder(f"video/openclip@{tiny_open_clip}", 1)
    clips = np.random.default_rng(1).integers(0, 256, (2, 3, 20, 20), dtype=np.uint8)  # (B, T, H, W) grey frames
    tokens = video(video.preprocess(clips))
    assert tokens.shape == (2, 3 * 17, 32) and video.top()(tokens).shape == (2, 16)


def test_open_clip_adapter_errors_name_the_directory(tmp_path):
    _open_clip()
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no open_clip_config.json"):
        create_encoder(f"image/openclip@{tmp_path}")
    with pytest.raises(ValueError, match="needs weights: use 'depth/openclip@<local dir"):
        create_encoder("depth/openclip")


def _towers_cfg(tiny, tmp_path, **extra):
    clip, clap = tiny["clip"], tiny["clap"]
    return load_config("ci", {"model.backbone": "towers", "model.prompt_depth": 2, "method.name": "comm",
                              "modalities.image.encoder": f"image/clip@{clip}",
                              "modalities.video.encoder": f"video/clip@{clip}",
                              "modalities.depth.encoder": f"depth/clip@{clip}",
                              "modalities.audio.encoder": f"audio/clap@{clap}",
                              "data.cache_dir": str(tmp_path / "cache"), "train.progress": False, **extra})


def test_a_tiny_clip_and_clap_train_comm_end_to_end_with_prompts_inside_their_towers(tiny, tmp_path):
    import pandas as pd

    from mmcl_lab.backbones import build_backbone
    from mmcl_lab.run import run_stream
    from mmcl_lab.streams import build_stream

    cfg = _towers_cfg(tiny, tmp_path)
    stream = build_stream(cfg)
    backbone = build_backbone(cfg, stream)
    model = backbone.model(stream)
    assert model.prompt_layers == 2 and model.prompt_width == 32
    assert model.class_text.shape == (len(stream.class_names), 16)  # each modality's own text tower, projected
    audio = [i for i, m in enumerate(stream.class_modality) if m == "audio"]
    clap_text = create_encoder(f"text/clap@{tiny['clap']}").encode([stream.class_prompts[i] for i in audio])
    torch.testing.assert_close(model.class_text[audio], clap_text)
    run = run_stream(cfg, tmp_path / "run", stream=stream, backbone=backbone)
    results = pd.read_csv(run.path / "results.csv")
    assert set(results.step) >= {-1, len(stream) - 1} and np.isfinite(results.value).all()
    # the prompts were trained inside the towers: COMM's prompts moved away from their initialisation
    method = run.read_checkpoint(run.latest_step())["method"]
    prompts = {k: v for k, v in method.items() if "prompt" in k}
    assert prompts and any(v.abs().sum() > 0 for v in prompts.values()), sorted(method)
    provenance = json.loads((run.path / "provenance.json").read_text())
    assert provenance.get("backbone") == backbone.key


def test_a_tiny_open_clip_trains_comm_with_prompts_inside_its_vision_tower(tiny, tiny_open_clip, tmp_path):
    import pandas as pd

    from mmcl_lab.run import run_stream

    oc = tiny_open_clip
    cfg = _towers_cfg(tiny, tmp_path, **{"modalities.image.encoder": f"image/openclip@{oc}",
                                         "modalities.depth.encoder": f"depth/openclip@{oc}",
                                         "modalities.video.encoder": f"video/openclip@{oc}",
                                         "stream.tasks_per_modality": 1, "train.epochs": 1})
    run = run_stream(cfg, tmp_path / "run")
    results = pd.read_csv(run.path / "results.csv")
    assert set(results.step) >= {-1, 3} and np.isfinite(results.value).all()


def test_towers_backbone_refuses_an_encoder_that_is_no_real_tower(tiny, tmp_path):
    from mmcl_lab.backbones import build_backbone
    from mmcl_lab.streams import build_stream

    cfg = _towers_cfg(tiny, tmp_path, **{"modalities.audio.encoder": "audio/tiny"})
    with pytest.raises(ConfigError, match="modalities.audio.encoder='audio/tiny' is not a real model's tower"):
        build_backbone(cfg, build_stream(cfg))


def test_plugins_reach_the_cli_by_import_option_and_by_entry_point(tmp_path, monkeypatch, capsys):
    from mmcl_lab.cli import main
    from mmcl_lab.registry import ENCODERS

    (tmp_path / "my_towers.py").write_text(
        "from mmcl_lab.encoders.text import TinyText\nfrom mmcl_lab.encoders import register_encoder\n"
        "register_encoder('text/mine')(type('MineText', (TinyText,), {}))\n")
    (tmp_path / "my_methods.py").write_text(
        "from mmcl_lab.methods import register_method\nfrom mmcl_lab.methods.finetune import Finetune\n"
        "register_method('mine')(type('Mine', (Finetune,), {}))\n")
    dist = tmp_path / "my_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mmcl_lab.plugins]\nmine = my_methods\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "text/mine" not in ENCODERS
    rc = main(["--import", "my_towers", "run", "--preset", "ci", "--out", str(tmp_path / "out"), "method.name=mine",
               "encoders.text=text/mine", "train.epochs=1", "stream.tasks_per_modality=1"])
    assert rc == 0, capsys.readouterr().err
    assert "text/mine" in ENCODERS and (tmp_path / "out" / "results.csv").exists()
    assert main(["--import", "no_such_module_xyz", "pretrain", "--preset", "ci"]) == 2
    assert "plug-in 'no_such_module_xyz' (--import) failed to import" in capsys.readouterr().err
    sys.modules.pop("my_towers", None)


def test_shared_tower_gives_one_input_adapter_for_one_network(ci_cfg, cache_dir):
    import dataclasses

    from mmcl_lab.streams import build_stream

    cfg = dataclasses.replace(ci_cfg, model=dataclasses.replace(ci_cfg.model, shared_tower=True))
    stream = build_stream(cfg)
    assert list(stream.feature_spaces) == ["tiny"]  # image, audio, depth and video all through one network
    assert len({t.feature_space for t in stream}) == 1
