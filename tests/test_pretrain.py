import hashlib

import numpy as np
import torch

from mmcl_lab.backbones import build_backbone
from mmcl_lab.config import apply_overrides
from mmcl_lab.data import load_raw


def test_pretraining_is_cached_and_deterministic(ci_cfg, ci_stream, ci_backbone, tmp_path):
    hit = build_backbone(ci_cfg, ci_stream, progress=False)
    assert hit.seconds == 0.0 and hit.checksum() == ci_backbone.checksum()  # read from the cache
    fresh = build_backbone(apply_overrides(ci_cfg, {"data.cache_dir": str(tmp_path)}), ci_stream, progress=False)
    assert fresh.seconds > 0 and fresh.checksum() == hit.checksum()  # pretrained again: the same weights
    other = build_backbone(apply_overrides(ci_cfg, {"data.cache_dir": str(tmp_path), "pretrain.seed": 1}), ci_stream,
                           progress=False)
    assert other.checksum() != hit.checksum()


def _hashes(x: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest() for row in x}


def test_corpus_is_disjoint_from_the_stream(ci_cfg, ci_stream):
    p = ci_cfg.pretrain
    for m, raw in ci_stream.raw.items():
        corpus = load_raw(ci_cfg.modalities[m].corpus, m, p.n_per_class, p.seed, ci_cfg.data.cache_dir, shift=p.shift)
        assert not _hashes(raw.x) & _hashes(corpus.x), m
        assert set(raw.class_names) < set(corpus.class_names), m  # a wider vocabulary, the stream's inside
        if raw.sources is not None:  # MNIST-derived: no source image is shared
            assert not set(raw.sources) & set(corpus.sources), m


def test_a_prompt_at_layer_k_changes_layer_k_and_nothing_below(ci_cfg, ci_stream, ci_backbone):
    model = ci_backbone.model(ci_stream)
    task = ci_stream[0]
    x = task.test_x[:4]
    layers, length, dim = ci_cfg.model.layers, 2, ci_cfg.model.dim
    for k in range(layers):
        outputs = {}
        hooks = [block.register_forward_hook(lambda mod, inp, out, i=i: outputs.setdefault(i, []).append(
                 out[:, length:].detach())) for i, block in enumerate(model.blocks)]
        base = torch.zeros(layers, length, dim)
        moved = base.clone()
        moved[k] = torch.randn(length, dim)
        with torch.no_grad():
            model.embed(x, task.feature_space, base)
            model.embed(x, task.feature_space, moved)
        for h in hooks:
            h.remove()
        for i in range(layers):
            same = torch.equal(outputs[i][0], outputs[i][1])
            assert same == (i < k), (k, i)


def test_early_stopping_ends_pretraining_once_held_out_accuracy_stalls(ci_cfg, ci_backbone):
    from mmcl_lab.backbones.binding import AlignmentModel, held_out, held_out_accuracy, pretrain

    corpus = ci_backbone.reference
    spaces = ci_backbone.spaces
    _, epochs = pretrain(apply_overrides(ci_cfg, {"pretrain.epochs": 3}), corpus, spaces, progress=False)
    assert epochs == 3  # patience 0: every epoch
    # A learning rate this small cannot move the held-out accuracy after the first epoch: it stalls at once.
    cfg = apply_overrides(ci_cfg, {"pretrain.epochs": 30, "pretrain.patience": 2, "pretrain.lr": 1e-9})
    state, epochs = pretrain(cfg, corpus, spaces, progress=False)
    assert epochs == 3  # the best epoch (the first), then two without improvement
    fit, val = held_out(corpus.pools, cfg.pretrain.val_fraction, cfg.pretrain.seed)
    assert all(len(v.y) for v in val) and sum(len(p.y) for p in fit + val) == sum(len(p.y) for p in corpus.pools)
    for f, v in zip(fit, val):  # every class on both sides, no sample on both
        assert set(f.y.tolist()) == set(v.y.tolist())
    model = AlignmentModel(spaces, corpus.class_text, ci_cfg.model)
    model.load_backbone(state)
    assert 0.0 <= held_out_accuracy(model.eval(), val, 64, "cpu") <= 1.0
