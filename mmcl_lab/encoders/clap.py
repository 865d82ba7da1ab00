"""CLAP (transformers) as a real aligned model: its HTSAT audio tower, its own text tower for the class texts, and
the checkpoint's feature extractor, which sets the rate that readers decode audio at (48 kHz for LAION's CLAP).

Cut `depth` blocks below the top of the audio tower's last stage. Prompts in those blocks are prefix keys and
values (prefix-tuning): a Swin block attends within windows with a relative-position bias, so the prompts need
the last stage to be one window (true of HTSAT: an 8x8 map under an 8x8 window), where they take no bias.
LAION's CLAP weights are Apache-2.0 (laion/clap-htsat-unfused); fused checkpoints are not supported.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TextEncoder, Tower, TowerTop, as_float_tensor, register_encoder, safetensors_only, split_layers


@functools.lru_cache(maxsize=4)
def load_clap(path: str):
    """The ClapModel at path, loaded once per process (the audio and the text tower share it)."""
    from transformers import ClapModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = ClapModel.from_pretrained(safetensors_only(path, "clap"), use_safetensors=True).eval()
    if model.config.audio_config.enable_fusion:
        raise ValueError(f"{path}: a fused CLAP checkpoint (enable_fusion); use an unfused one")
    return model.requires_grad_(False)


def _prefixed_block(block: nn.Module, h: Tensor, prompt: Tensor) -> Tensor:
    """One HTSAT (Swin) block over a single-window map h (B, N, C) whose attention also reads prompt (B, L, C) as
    extra keys and values (no relative-position bias for them); the block's own weights, as its forward uses them."""
    att = block.attention.self
    b, n, c = h.shape
    heads, width = att.num_attention_heads, att.attention_head_size
    x = block.layernorm_before(h)  # (B, N, C)
    kv = torch.cat([block.layernorm_before(prompt), x], dim=1)  # (B, L + N, C)
    q = att.query(x).view(b, n, heads, width).transpose(1, 2)  # (B, heads, N, w)
    k = att.key(kv).view(b, -1, heads, width).transpose(1, 2)  # (B, heads, L + N, w)
    v = att.value(kv).view(b, -1, heads, width).transpose(1, 2)
    bias = att.relative_position_bias_table[att.relative_position_index.view(-1)].view(n, n, heads)  # (N, N, heads)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width) + F.pad(bias.permute(2, 0, 1), (prompt.shape[1], 0))
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
    h = h + block.attention.output(context, None)
    return h + block.output(block.intermediate(block.layernorm_after(h)))


class SwinTop(TowerTop):
    """The last blocks of CLAP's audio tower with prefix prompts, its final norm, the mean over positions (the
    tower's pooling) and the audio projection."""

    def __init__(self, blocks: list[nn.Module], dims: tuple[int, int], norm: nn.Module, projection: nn.Module,
                 log_scale: float):
        super().__init__()
        self.blocks = nn.ModuleList(copy.deepcopy(blocks))
        self.norm, self.projection = copy.deepcopy(norm), copy.deepcopy(projection)
        self.dims, self.layers, self.log_scale = dims, len(blocks), log_scale
        self.width = norm.normalized_shape[0]

    def forward(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        if not self.layers:  # projected embeddings were cached: (B, 1, E)
            return tokens[:, 0]
        h, depth = tokens, 0 if prompts is None else prompts.shape[1]
        for k, block in enumerate(self.blocks):
            h = _prefixed_block(block, h, prompts[:, k]) if k < depth else block(h, self.dims)[0]
        return self.projection(self.norm(h).mean(1))  # (B, E)


@register_encoder("audio/clap")
class AudioCLAP(Tower):
    """CLAP's audio tower on the checkpoint's log-mel features: (B, N, C) hidden states at the cut in its last
    stage, or (B, 1, E) projected embeddings at depth 0."""

    modality, source = "audio", "transformers CLAP audio tower (HTSAT) + the checkpoint's feature extractor"
    license = "the checkpoint's own (LAION's CLAP: Apache-2.0)"

    def __init__(self, path: str = "", depth: int = 0):
        super().__init__()
        from transformers import AutoFeatureExtractor

        self.model = load_clap(safetensors_only(path, "audio/clap"))
        self.path, self.depth = path, depth
        self.audio = self.model.audio_model.audio_encoder
        self.extractor = AutoFeatureExtractor.from_pretrained(path)
        self.sample_rate = self.extractor.sampling_rate
        last = self.audio.layers[-1]
        self.cut = split_layers(last.blocks, depth, f"the last stage of CLAP's audio tower at {path}")
        self.dims = tuple(self.audio.input_resolutions[-1])
        window = self.model.config.audio_config.window_size
        if depth and self.dims != (window, window):
            raise ValueError(f"{path}: prompts inside CLAP's audio tower need its last stage to be one attention "
                             f"window; it is {self.dims} under window {window}: set model.prompt_depth=0")
        self.dim = self.audio.num_features if depth else self.model.config.projection_dim
        self.feature_space = f"audio/clap:{path}"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        import torchaudio.functional as AF

        waves = as_float_tensor(x)  # (B, L)
        if sample_rate != self.sample_rate:  # in-memory audio at its own rate (files are decoded at the target)
            waves = AF.resample(waves, sample_rate, self.sample_rate)
        feats = self.extractor(list(waves.numpy()), sampling_rate=self.sample_rate, return_tensors="pt")
        return feats["input_features"]  # (B, 1, frames, mels)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, frames, mels) -> (B, N, C) or (B, 1, E)
        a = self.audio
        h = a.batch_norm(x.transpose(1, 3)).transpose(1, 3)
        h = a.patch_embed(a.reshape_mel2img(h), None)  # (B, N0, C0)
        for i, stage in enumerate(a.layers[:-1]):
            h = stage(h, a.input_resolutions[i])[0]  # downsampled into the next stage
        for block in a.layers[-1].blocks[: self.cut]:
            h = block(h, self.dims)[0]
        if self.depth:
            return h
        return self.model.audio_projection(a.norm(h).mean(1))[:, None]  # the tower's pooled output, projected

    def top(self) -> SwinTop:
        return SwinTop(list(self.audio.layers[-1].blocks[self.cut:]), self.dims, self.audio.norm,
                       self.model.audio_projection, self.model.logit_scale_a.item())

    def text_tower(self) -> TextEncoder:
        return CLAPText(self.path)

    def cache_key(self) -> str:
        return f"{super().cache_key()}|{self.extractor.to_json_string()}"


@register_encoder("text/clap")
class CLAPText(TextEncoder):
    """CLAP's text tower with the checkpoint's tokenizer: projected, L2-normalised embeddings (N, E)."""

    source = "transformers CLAP text tower + the checkpoint's tokenizer"
    license = AudioCLAP.license

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import AutoTokenizer

        self.model = load_clap(safetensors_only(path, "text/clap"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim = self.model.config.projection_dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.normalize(out if isinstance(out, Tensor) else out.pooler_output, dim=-1)  # (N, E)
