"""The bundled backbone: a small binding transformer over frozen encoder tokens, pretrained once against the
frozen text tower on a generated corpus, then cached.

As ImageBind or LanguageBind bind modality towers to a frozen text tower, the model's per-space input adapters
and shared transformer are trained contrastively against the frozen text embeddings (MiniLM by default,
`encoders.text`) of templated class names, with a learned temperature, on a corpus disjoint from the stream
(data/corpus.py). The weights are cached as safetensors under <cache>/backbones/, keyed by the corpus, the
configuration and this file's code; the same key always gives the same weights. Every method then starts from
them: frozen (prompt methods) or fine-tuned (the others). Prompts are prefix tokens at every layer (deep prompts).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..batches import Batch, iterate_batches, merge_spaces, n_batches, to_device
from ..config import ModelConfig, RunConfig
from ..data import load_raw, split_indices, template_for
from ..encoders import CachedText
from ..features import extraction, load_features, take_rows
from ..utils import (adamw, atomic_write_bytes, cache_path, digest, main_process_first, read_tensor_file,
                     tensor_file_bytes, tensors_digest)
from .base import Backbone, CosineLogits, register_backbone, space_key

N_POOL = 2  # pooled views of the data tokens: a mean and a learned weighting (a ramp at start)


def _pool_init(n_tokens: int) -> Tensor:
    ramp = torch.linspace(-1.0, 1.0, n_tokens) if n_tokens > 1 else torch.zeros(1)
    return torch.stack([torch.full((n_tokens,), 1.0 / n_tokens), ramp / n_tokens], dim=1)  # (T, 2)


def prefixed(block: nn.TransformerEncoderLayer, prompt: Tensor, h: Tensor) -> Tensor:
    """block over [prompt; h] with the prompt's outputs dropped, (B, L, dim) and (B, T, dim) -> (B, T, dim), computed
    as prefix tuning does: the prompt tokens give keys and values, and only h's tokens are queried and go through the
    feed-forward. In training mode this is block(cat([prompt, h]))[:, L:] bit for bit, outputs and gradients (tested;
    in a batch of one or two samples the smaller matmuls may take other kernels, and differ in the last bits), at
    about 0.6x its time on 2 cores: 5 prompt tokens before 4 data tokens no longer pay for an output projection and
    a feed-forward of their own. Attention runs over every query and drops the prompt rows after, as the block
    does, because the attention kernel splits a shorter query differently. The blocks are pre-norm, without
    dropout (AlignmentModel)."""
    x = torch.cat([prompt, h], dim=1)  # (B, S = L + T, dim)
    attn = block.self_attn
    qkv = F.linear(block.norm1(x), attn.in_proj_weight, attn.in_proj_bias)  # (B, S, 3 * dim), as the block packs it
    q, k, v = qkv.unflatten(-1, (3, attn.num_heads, -1)).permute(2, 0, 3, 1, 4)  # each (B, heads, S, dim / heads)
    mixed = F.scaled_dot_product_attention(q, k, v)[:, :, prompt.shape[1]:]  # (B, heads, T, dim / heads)
    h = h + attn.out_proj(mixed.transpose(1, 2).flatten(2))  # (B, T, dim)
    return h + block.linear2(block.activation(block.linear1(block.norm2(h))))


class AlignmentModel(CosineLogits):
    """Frozen tokens of any feature space -> L2-normalised embeddings comparable with class-name texts.

    Per feature space (an input adapter): LayerNorm + Linear to width dim, learned token positions, and
    learned pooling weights over token positions (initialised to a mean and a first-to-last ramp, so frame
    order -- the direction of a motion -- survives pooling). Shared: `layers` pre-norm transformer blocks,
    then LayerNorm + Linear from the pooled data tokens into the text anchor space, and a learned
    temperature. Prompts are prefix tokens: layer k attends over [prompts[k]; data tokens] and drops the
    prompt outputs again (deep prompts, as VPT-deep and L2P/COMM on ViTs); methods own them.
    """

    def __init__(self, feature_spaces: dict[str, tuple[int, int]], class_text: Tensor, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = nn.ModuleDict({space_key(s): nn.Sequential(nn.LayerNorm(f), nn.Linear(f, cfg.dim))
                                     for s, (_, f) in feature_spaces.items()})
        self.positions = nn.ParameterDict({space_key(s): nn.Parameter(0.02 * torch.randn(t, cfg.dim))
                                           for s, (t, _) in feature_spaces.items()})
        self.pooling = nn.ParameterDict({space_key(s): nn.Parameter(_pool_init(t))
                                         for s, (t, _) in feature_spaces.items()})
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(cfg.layers)])
        self.out = nn.Sequential(nn.LayerNorm(N_POOL * cfg.dim), nn.Linear(N_POOL * cfg.dim, class_text.shape[1]))
        # log(1 / temperature), learned in pretraining (as CLIP's logit scale) and frozen afterwards.
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)), requires_grad=False)
        self.register_buffer("class_text", class_text.clone())  # (C, E), frozen anchors

    @property
    def prompt_layers(self) -> int:
        """Layers with a prompt hook: every transformer block."""
        return len(self.blocks)

    @property
    def prompt_width(self) -> int:
        """Width of a prompt token: the transformer's."""
        return self.cfg.dim

    def embed(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) tokens [+ prompts (D, L, dim) or (B, D, L, dim) for the first D layers] -> (B, E) unit
        vectors."""
        key = space_key(space)
        if key not in self.inputs:
            raise KeyError(f"feature space {space!r} is unknown to this model")
        expected = self.inputs[key][0].normalized_shape[0]
        if x.ndim != 3 or x.shape[-1] != expected or x.shape[1] > len(self.positions[key]):
            raise ValueError(f"features for {space!r} must be (B, <={len(self.positions[key])}, "
                             f"{expected}), got {tuple(x.shape)}")
        h = self.inputs[key](x) + self.positions[key][: x.shape[1]]  # (B, T, dim)
        if prompts is not None:
            prompts = prompts.expand(x.shape[0], -1, -1, -1) if prompts.ndim == 3 else prompts  # (B, D, L, dim)
            if prompts.ndim != 4 or prompts.shape[1] > len(self.blocks) or prompts.shape[-1] != self.cfg.dim:
                raise ValueError(f"prompts must be (B, <={len(self.blocks)}, L, {self.cfg.dim}), "
                                 f"got {tuple(prompts.shape)}")
        depth = 0 if prompts is None else prompts.shape[1]
        for k, block in enumerate(self.blocks):
            if k >= depth:
                h = block(h)
            elif self.training:  # prefix tokens for this layer: attended to, then dropped
                h = prefixed(block, prompts[:, k], h)
            else:  # torch's fused inference kernel over the whole sequence: the form every result was measured in
                n_prompt = prompts.shape[2]
                h = block(torch.cat([prompts[:, k], h], dim=1))[:, n_prompt:]  # (B, L + T, dim) -> (B, T, dim)
        weights = self.pooling[key][: x.shape[1]]  # (T, K)
        pooled = torch.einsum("btd,tk->bkd", h, weights).flatten(1)  # (B, K * dim)
        return F.normalize(self.out(pooled), dim=-1)  # (B, E)

    def forward(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """embed(); a forward lets torch.func (per-sample gradients) call the model functionally."""
        return self.embed(x, space, prompts)

    def load_backbone(self, state: dict[str, Tensor]) -> None:
        """Load pretrained weights (everything but the class texts, which belong to the stream)."""
        state = {k: v for k, v in state.items() if k != "class_text"}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"class_text"}:
            raise ValueError(f"pretrained weights do not fit this model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}; check model.* against the pretraining config")


# ---- pretraining ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Corpus:
    """The encoded pretraining corpus: one pool per modality, labels into one shared vocabulary."""

    pools: list[Batch]  # x (N, T, F) frozen features, y (N,) vocabulary ids
    class_names: tuple[str, ...]  # the vocabulary over all modalities
    class_modality: tuple[str, ...]
    class_text: Tensor  # (V, E) text anchors of the vocabulary
    key: str  # identity of the features and texts
    fingerprints: dict[str, dict[str, str]] = field(default_factory=dict)  # modality -> Features.fingerprints()

    @property
    def feature_spaces(self) -> dict[str, tuple[int, int]]:
        """space -> (max tokens, dim) over the pools."""
        return merge_spaces((p.space, p.x.shape[1:]) for p in self.pools)


def build_corpus(cfg: RunConfig, text_tower, device: torch.device | str = "cpu", progress: bool = False,
                 text_towers: dict | None = None) -> Corpus:
    """Generate (cached) and encode (cached) the corpus of every stream modality with the stream's encoders, in
    modality-name order (the stream's task order never changes the backbone); class texts by text_tower, or by each
    modality's own (text_towers: modality -> tower, as real models pair them). pretrain.stream_classes=false leaves
    out every class the stream's datasets name, with its samples."""
    left_out = set() if cfg.pretrain.stream_classes else stream_class_names(cfg)
    pools, names, mods, texts, keys, prints = [], [], [], [], [], {}
    for m in sorted(cfg.stream.modalities):
        entry = cfg.modalities[m]
        feats = load_features(entry.corpus, m, entry.encoder, cfg.pretrain.n_per_class, cfg.pretrain.seed,
                              cfg.data.cache_dir, device=device, progress=progress, shift=cfg.pretrain.shift,
                              **extraction(cfg))
        kept = [c for c, name in enumerate(feats.raw.class_names) if name not in left_out]
        rows = np.flatnonzero(np.isin(feats.raw.y, kept))
        relabel = np.full(len(feats.raw.class_names), -1)
        relabel[kept] = np.arange(len(kept)) + len(names)  # into the vocabulary over all modalities
        tokens = feats.tokens if len(rows) == len(feats.raw.y) else take_rows(feats.tokens, rows)
        pools.append(Batch(tokens, torch.from_numpy(relabel[feats.raw.y[rows]]), feats.space, m))
        kept_names = [feats.raw.class_names[c] for c in kept]
        names += kept_names
        mods += [m] * len(kept_names)
        texts += [template_for(entry.template, feats.raw).format(n) for n in kept_names]
        keys.append(feats.key)
        prints[m] = feats.fingerprints()
    if text_towers is None:
        class_text = text_tower.encode(texts).float()
    else:  # (V, E) in vocabulary order, each modality's names through its own text tower
        class_text = torch.cat([text_towers[m].encode([t for t, tm in zip(texts, mods) if tm == m]).float()
                                for m in dict.fromkeys(mods)])
    return Corpus(pools, tuple(names), tuple(mods), class_text, digest([keys, cfg.encoders.text, texts], 20), prints)


def stream_class_names(cfg: RunConfig) -> set[str]:
    """Every class name of the stream's datasets (generated data read from the cache; files only listed)."""
    return {name for m in cfg.stream.modalities
            for name in load_raw(cfg.modalities[m].data, m, cfg.data.n_per_class, cfg.data.seed,
                                 cfg.data.cache_dir).class_names}


def contrastive_loss(model: AlignmentModel, batch: Batch) -> Tensor:
    """Symmetric sample-text InfoNCE with class texts as anchors: each sample against every vocabulary text,
    and each class text present in the batch against the batch's samples (its own samples are positives)."""
    logits = model.logits(model.embed(batch.x, batch.space))  # (B, V), scaled by the learned temperature
    to_text = F.cross_entropy(logits, batch.y)
    present = batch.y.unique()  # (P,)
    positive = (batch.y[None, :] == present[:, None]).float()  # (P, B)
    to_sample = -(positive * logits[:, present].T.log_softmax(1)).sum(1) / positive.sum(1)  # (P,)
    return (to_text + to_sample.mean()) / 2


def held_out(pools: list[Batch], fraction: float, seed: int) -> tuple[list[Batch], list[Batch]]:
    """Each pool split into the samples pretraining fits and `fraction` of every class held out (stratified,
    seeded): (fit pools, held-out pools)."""
    fit, val = [], []
    for pool in pools:
        keep, out = split_indices(pool.y.numpy(), fraction, seed)
        fit.append(Batch(take_rows(pool.x, keep), pool.y[keep], pool.space, pool.modality))
        val.append(Batch(take_rows(pool.x, out), pool.y[out], pool.space, pool.modality))
    return fit, val


@torch.no_grad()
def held_out_accuracy(model: AlignmentModel, pools: list[Batch], batch_size: int, device: torch.device | str) -> float:
    """Zero-shot accuracy of held-out samples over the whole vocabulary, mean over the pools (modalities)."""
    scores = []
    for pool in pools:
        hits = 0
        for i in range(0, len(pool.y), batch_size):
            x, y = to_device(pool.x[i:i + batch_size], device), pool.y[i:i + batch_size].to(device)
            hits += (model.logits(model.embed(x, pool.space)).argmax(1) == y).sum().item()
        scores.append(hits / max(len(pool.y), 1))
    return sum(scores) / max(len(scores), 1)


def pretrain(cfg: RunConfig, corpus: Corpus, spaces: dict[str, tuple[int, int]], device: torch.device | str = "cpu",
             progress: bool = True) -> tuple[dict[str, Tensor], int]:
    """Train the binding model on the corpus, on device, for at most pretrain.epochs epochs, stopping early once
    the held-out part stops improving (pretrain.patience); returns the best epoch's state dict on the CPU (class
    texts excluded) and the number of epochs run."""
    p = cfg.pretrain
    with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(p.seed)
        model = AlignmentModel(spaces, corpus.class_text, cfg.model)
    model = model.to(device)
    model.log_scale.requires_grad_(True)
    opt = adamw(model.parameters(), device, lr=p.lr)
    generator = torch.Generator().manual_seed(p.seed)
    pools, val = held_out(corpus.pools, p.val_fraction, p.seed) if p.patience else (corpus.pools, [])
    best, best_score, stale = None, -1.0, 0
    with tqdm(total=p.epochs * n_batches(pools, p.batch_size), desc="pretrain", disable=not progress,
              leave=False) as bar:
        for epoch in range(p.epochs):
            model.train()
            for batch in iterate_batches(pools, p.batch_size, generator, torch.device(device)):
                loss = contrastive_loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
            if not val:
                continue
            model.eval()
            score = held_out_accuracy(model, val, p.batch_size, device)
            if score > best_score:  # a plateau counts as no improvement, so it ends pretraining too
                best, best_score, stale = _cpu_state(model), score, 0
            else:
                stale += 1
            bar.set_postfix(epoch=epoch, held_out_acc=f"{score:.3f}", best=f"{best_score:.3f}", refresh=False)
            if stale >= p.patience:
                break
    return (best if best is not None else _cpu_state(model)), epoch + 1


def _cpu_state(model: AlignmentModel) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k != "class_text"}


def weights_checksum(state: dict[str, Tensor]) -> str:
    """A short sha256 of a state dict's tensors (tensors_digest), class texts excluded."""
    return tensors_digest({k: v for k, v in state.items() if k != "class_text"})[:16]


@dataclass(frozen=True, eq=False)
class BindingBackbone(Backbone):
    """Pretrained binding weights with the text tower they were aligned to and the corpus they came from (ZSCL's
    reference data)."""

    state: dict[str, Tensor]
    text_tower: nn.Module
    reference: Corpus
    spaces: dict[str, tuple[int, int]]  # the feature spaces it has input adapters for (stream's and corpus's)
    model_cfg: ModelConfig
    key: str
    seconds: float  # pretraining time; 0.0 on a cache hit
    epochs: int = 0  # epochs pretraining ran (early stopping may end it before pretrain.epochs); 0: not recorded

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return self.text_tower.encode(list(texts)).float()

    def model(self, stream, pretrained: bool = True) -> AlignmentModel:
        model = AlignmentModel(self.spaces, self.encode_text(stream.class_prompts), self.model_cfg)
        if pretrained:
            model.load_backbone(self.state)
        return model

    def checksum(self) -> str:
        return weights_checksum(self.state)

    def fingerprints(self) -> dict:
        return {"weights": self.checksum(), "corpus": self.reference.fingerprints}

    def describe(self) -> str:
        corpus, how = self.reference, f"pretrained in {self.seconds:.1f} s" if self.seconds else "read from the cache"
        how += f", {self.epochs} epochs" if self.epochs else ""
        return (f"backbone binding {self.key} ({how}; weights {self.checksum()}): {self.model_cfg.layers} layers x "
                f"{self.model_cfg.dim}, corpus of {sum(len(p.y) for p in corpus.pools)} samples over "
                f"{len(corpus.class_names)} class names")


@register_backbone("binding")
def binding_backbone(cfg: RunConfig, spaces: dict[str, tuple[int, int]], device: torch.device,
                     progress: bool = True) -> BindingBackbone:
    """The binding backbone for cfg: read from the cache, or pretrained once on device (25 s on 2 cores, default
    preset). The corpus covers the stream's modalities, each encoded with the stream's encoder for it."""
    text_tower = CachedText(cfg.encoders.text, cfg.data.cache_dir)  # a warm run loads no text model
    corpus = build_corpus(cfg, text_tower, device, progress)
    # sorted: the model's input adapters are made (and initialised) in one order, whatever the stream's task order
    spaces = dict(sorted(merge_spaces([*spaces.items(), *corpus.feature_spaces.items()]).items()))
    code = digest(Path(__file__).read_text())  # editing the model or its pretraining never reuses stale weights
    key_src = json.dumps({"corpus": corpus.key, "model": asdict(cfg.model), "spaces": sorted(spaces.items()),
                          "pretrain": asdict(cfg.pretrain), "code": code}, sort_keys=True)
    key, path = digest(key_src, 20), cache_path(cfg.data.cache_dir, "backbones", "binding", key_src, ".safetensors")
    with main_process_first():  # under torchrun rank 0 pretrains, the others read its file
        if path.exists():
            state, metadata = read_tensor_file(path, "delete it to pretrain again")
            if metadata.get("key") != key_src:
                raise ValueError(f"{path}: written for another corpus or config; delete it to pretrain again")
            return BindingBackbone(state, text_tower, corpus, spaces, cfg.model, key, 0.0,
                                   int(metadata.get("epochs", 0)))
        start = time.perf_counter()
        state, epochs = pretrain(cfg, corpus, spaces, device, progress)
        atomic_write_bytes(path, tensor_file_bytes(state, {"key": key_src, "epochs": str(epochs)}))
        return BindingBackbone(state, text_tower, corpus, spaces, cfg.model, key, time.perf_counter() - start, epochs)
