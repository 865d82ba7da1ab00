"""The pretrained backbone: a binding model aligned to text on the pretraining corpus, once, then cached.

As ImageBind or LanguageBind bind modality towers to a frozen text tower, the model's per-modality
adapters and shared transformer are trained contrastively against the frozen MiniLM text of templated
class names (with a learned temperature), on a generated corpus that is disjoint from the stream
(data/corpus.py). The weights are cached as safetensors under <cache>/backbones/, keyed by the corpus,
the configuration and this code; the same key always gives the same weights.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from . import model as model_module
from .cache import cached_features, data_fingerprint
from .config import RunConfig
from .data import cache_root, load_raw
from .encoders import create_encoder
from .model import AlignmentModel
from .batches import Batch, iterate_batches, merge_spaces, n_batches
from .utils import atomic_write_bytes, main_process_first, read_tensor_file, tensor_file_bytes, tensors_digest


@dataclass(frozen=True, eq=False)
class Corpus:
    """The encoded pretraining corpus: one pool per modality, labels into one shared vocabulary."""

    pools: list[Batch]  # x (N, T, F) frozen features, y (N,) vocabulary ids
    class_names: tuple[str, ...]  # the vocabulary over all modalities
    class_modality: tuple[str, ...]
    class_text: Tensor  # (V, E) text anchors of the vocabulary
    key: str  # identity of the features and texts

    @property
    def feature_spaces(self) -> dict[str, tuple[int, int]]:
        """space -> (max tokens, dim) over the pools."""
        return merge_spaces((p.space, p.x.shape[1:]) for p in self.pools)


@dataclass(frozen=True, eq=False)
class Backbone:
    """Pretrained weights every method starts from, with the corpus they came from (ZSCL's reference data)."""

    state: dict[str, Tensor]
    corpus: Corpus
    spaces: dict[str, tuple[int, int]]  # the feature spaces it has input adapters for (stream's and corpus's)
    key: str
    seconds: float  # pretraining time; 0.0 on a cache hit

    def checksum(self) -> str:
        """A short hash of the weights (the same for every method of a comparison)."""
        return weights_checksum(self.state)


def weights_checksum(state: dict[str, Tensor]) -> str:
    """A short sha256 of a state dict's tensors (tensors_digest), class texts excluded."""
    return tensors_digest({k: v for k, v in state.items() if k != "class_text"})[:16]


def build_corpus(cfg: RunConfig, progress: bool = False) -> Corpus:
    """Generate (cached) and encode (cached) the corpus of every stream modality with the stream's encoders."""
    pools, names, mods, keys = [], [], [], []
    for m in cfg.stream.modalities:
        spec = getattr(cfg.pretrain, m)
        raw = load_raw(spec, m, cfg.pretrain.n_per_class, cfg.pretrain.seed, cfg.data.cache_dir,
                       shift=cfg.pretrain.shift)
        encoder = create_encoder(getattr(cfg.encoders, m))
        tokens = cached_features(encoder, raw, cfg.data.cache_dir, cfg.encoders.batch_size, progress=progress)
        offset = len(names)
        pools.append(Batch(tokens, torch.from_numpy(raw.y) + offset, encoder.feature_space, m))
        names += list(raw.class_names)
        mods += [m] * len(raw.class_names)
        keys.append([encoder.cache_key(), data_fingerprint(raw)])
    texts = [getattr(cfg.templates, m).format(n) for n, m in zip(names, mods)]
    class_text = create_encoder(cfg.encoders.text).encode(texts).float()
    key = hashlib.sha256(json.dumps([keys, cfg.encoders.text, texts]).encode()).hexdigest()[:20]
    return Corpus(pools, tuple(names), tuple(mods), class_text, key)


def contrastive_loss(model: AlignmentModel, batch: Batch) -> Tensor:
    """Symmetric sample-text InfoNCE with class texts as anchors: each sample against every vocabulary text,
    and each class text present in the batch against the batch's samples (its own samples are positives)."""
    logits = model.logits(model.embed(batch.x, batch.space))  # (B, V), scaled by the learned temperature
    to_text = F.cross_entropy(logits, batch.y)
    present = batch.y.unique()  # (P,)
    positive = (batch.y[None, :] == present[:, None]).float()  # (P, B)
    to_sample = -(positive * logits[:, present].T.log_softmax(1)).sum(1) / positive.sum(1)  # (P,)
    return (to_text + to_sample.mean()) / 2


def _code_digest() -> str:
    # Editing the model or the pretraining code must never reuse stale weights.
    code = inspect.getsource(model_module) + Path(__file__).read_text()
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def pretrain(cfg: RunConfig, corpus: Corpus, spaces: dict[str, tuple[int, int]], progress: bool = True) -> dict:
    """Train the binding model on the corpus; returns its state dict (class texts excluded)."""
    p = cfg.pretrain
    with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(p.seed)
        model = AlignmentModel(spaces, corpus.class_text, cfg.model)
    model.log_scale.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr)
    generator = torch.Generator().manual_seed(p.seed)
    model.train()
    total = p.epochs * n_batches(corpus.pools, p.batch_size)
    with tqdm(total=total, desc="pretrain", disable=not progress, leave=False) as bar:
        for _ in range(p.epochs):
            for batch in iterate_batches(corpus.pools, p.batch_size, generator, torch.device("cpu")):
                loss = contrastive_loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "class_text"}


def pretrained_backbone(cfg: RunConfig, spaces: dict[str, tuple[int, int]], progress: bool = True) -> Backbone:
    """The backbone for cfg: read from the cache, or pretrained once (25 s on 2 cores, default preset). The
    corpus covers the stream's modalities, each encoded with the stream's encoder for it."""
    corpus = build_corpus(cfg, progress)
    spaces = merge_spaces([*spaces.items(), *corpus.feature_spaces.items()])
    key_src = json.dumps({"corpus": corpus.key, "model": asdict(cfg.model), "spaces": sorted(spaces.items()),
                          "pretrain": asdict(cfg.pretrain), "code": _code_digest()}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = cache_root(cfg.data.cache_dir) / "backbones" / f"binding-{key}.safetensors"
    with main_process_first():  # under torchrun rank 0 pretrains, the others read its file
        if path.exists():
            return Backbone(_read(path, key_src), corpus, spaces, key, 0.0)
        start = time.perf_counter()
        state = pretrain(cfg, corpus, spaces, progress)
        atomic_write_bytes(path, tensor_file_bytes(state, {"key": key_src}))
        return Backbone(state, corpus, spaces, key, time.perf_counter() - start)


def _read(path: Path, key_src: str) -> dict[str, Tensor]:
    state, metadata = read_tensor_file(path, "delete it to pretrain again")
    if metadata.get("key") != key_src:
        raise ValueError(f"{path}: written for another corpus or config; delete it to pretrain again")
    return state


def attach_backbone(stream, cfg: RunConfig, progress: bool = True):
    """A TaskStream with its pretrained backbone (every method's starting point) and the merged feature spaces."""
    backbone = pretrained_backbone(cfg, stream.feature_spaces, progress)
    return replace(stream, backbone=backbone, feature_spaces=backbone.spaces)
