"""Tiny random CLIP, CLAP, open_clip and binding-model checkpoints written to disk with their processors and
tokenizers, so that tests, benchmarks and the real-model notebook run the real adapters without downloading anything.
Their processors differ from the defaults on purpose (size, crop, mean, std, sample rate), so that code which
preprocessed by hand would give other inputs than the checkpoint's own processor."""

from __future__ import annotations

import string
from pathlib import Path

import yaml

SPECIALS = ["<s>", "<pad>", "<unk>", "</s>"]  # ids 0-3; CLIP pools at </s> (not id 2, its legacy argmax path)
WIDTH = 32  # the hidden size of every tiny tower: prompts of one width fit all of them


def save_tokenizer(path: Path, max_length: int = 64) -> int:
    """A character-level tokenizer (every distinct text gets distinct ids) saved for AutoTokenizer; its vocab size."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIALS, *(string.ascii_lowercase + string.digits + " _-'.")])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", model_max_length=max_length).save_pretrained(path)
    return len(vocab)


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, resample=0,
                              image_mean=[0.3, 0.5, 0.7], image_std=[0.2, 0.3, 0.25])


def save_tiny_clip(path: str | Path, layers: int = 4, seed: int = 0) -> Path:
    """A random CLIPModel (ViT: 32 px, 8 px patches, `layers` layers, width 32; 16-d projection) with a
    non-default image processor and a character tokenizer, at path."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    vocab = save_tokenizer(path)
    text = dict(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=3, pad_token_id=1)
    vision = dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    _image_processor().save_pretrained(path)
    return path


def save_tiny_clap(path: str | Path, seed: int = 0) -> Path:
    """A random unfused ClapModel (HTSAT: 64 mel bins, spec 64, stages of 1 and 2 blocks, the last one window of
    8x8; width 32; 16-d projection) with a 16 kHz feature extractor (LAION's: 48 kHz) and a character tokenizer."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    path = Path(path)
    vocab = save_tokenizer(path)
    audio = dict(depths=[1, 2], num_attention_heads=[2, 2], patch_embeds_hidden_size=WIDTH // 2, hidden_size=WIDTH,
                 window_size=8, spec_size=64, num_mel_bins=64, enable_fusion=False)
    text = dict(vocab_size=vocab, hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=80, pad_token_id=1, bos_token_id=0, eos_token_id=3)
    torch.manual_seed(seed)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(path)
    ClapFeatureExtractor(feature_size=64, sampling_rate=16000, max_length_s=1, hop_length=256, fft_window_size=1024,
                         truncation="rand_trunc", frequency_max=8000).save_pretrained(path)
    return path


def save_tiny_binding(path: str | Path, modalities: tuple[str, ...] = ("image", "depth"), seed: int = 0) -> Path:
    """A binding model in the towers.yaml layout: one random CLIP vision tower with projection per modality and a
    CLIP text tower with projection (all 16-d), as ImageBind- or LanguageBind-style checkpoints are split.
    Returns the towers.yaml path."""
    import torch
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    path = Path(path)
    torch.manual_seed(seed)
    vocab = save_tokenizer(path / "text")
    CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=3, pad_token_id=1, projection_dim=16,
    )).save_pretrained(path / "text")
    for m in modalities:
        CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8, projection_dim=16)).save_pretrained(path / m)
        _image_processor().save_pretrained(path / m)
    spec = {"text": "text", "towers": {m: m for m in modalities}, "logit_scale": 50.0}
    (path / "towers.yaml").write_text(yaml.safe_dump(spec))
    return path / "towers.yaml"


def save_tiny_open_clip(path: str | Path, layers: int = 4, seed: int = 0) -> Path:
    """A random open_clip CLIP (ViT: 32 px, 8 px patches, `layers` layers, width 32; 16-d embedding; open_clip's own
    BPE tokenizer, 16 tokens) in open_clip's hub layout, with a non-default transform (squash resize, bilinear,
    other mean and std), at path. Needs open_clip (the open_clip extra)."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": layers, "width": WIDTH, "head_width": 16, "patch_size": 8},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": WIDTH, "heads": 2, "layers": 2}}
    preprocess_cfg = {"mean": [0.3, 0.5, 0.7], "std": [0.2, 0.3, 0.25], "interpolation": "bilinear",
                      "resize_mode": "squash"}
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    return path
