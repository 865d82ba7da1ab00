import hashlib

import numpy as np
import torch

from mmcl_lab.backbones import build_backbone
from mmcl_lab.config import apply_overrides
from mmcl_lab.data import load_raw
from mmcl_lab.streams import build_stream


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
    model = ci_backbone.model(ci_stream).eval()  # in eval mode every block runs as a module, so its hook sees it
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


def test_training_runs_prompts_as_prefix_keys_and_values_bit_for_bit(ci_cfg, ci_stream, ci_backbone):
    from mmcl_lab.backbones.binding import prefixed
    model = ci_backbone.model(ci_stream)
    g = torch.Generator().manual_seed(0)
    for block in model.blocks:
        for length, tokens in ((3, 4), (1, 16)):
            h = torch.randn(5, tokens, ci_cfg.model.dim, generator=g)
            prompt = torch.randn(5, length, ci_cfg.model.dim, generator=g)
            outs, grads = [], []
            for as_prefix in (True, False):
                p = prompt.clone().requires_grad_()
                out = prefixed(block, p, h) if as_prefix else block(torch.cat([p, h], 1))[:, length:]
                (out ** 2).sum().backward()
                outs.append(out.detach())
                grads.append(p.grad)
            assert torch.equal(*outs) and torch.equal(*grads)
    task = ci_stream[0]
    prompts = torch.randn(ci_cfg.model.layers, 2, ci_cfg.model.dim, generator=g)
    with torch.no_grad():  # the training form and the inference kernel agree, up to the last bits
        trained = model.train().embed(task.test_x, task.feature_space, prompts)
        served = model.eval().embed(task.test_x, task.feature_space, prompts)
    assert torch.allclose(trained, served, atol=1e-5)


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


def test_the_backbone_does_not_depend_on_the_streams_order(ci_cfg, ci_backbone):
    """The corpus is built in modality-name order and the input adapters made in sorted order: listing the stream's
    modalities in another order, or drawing a random task order, pretrains the same weights."""
    for overrides in ({"stream.modalities": "video,depth,audio,image"}, {"stream.order": "random", "seed": 3}):
        cfg = apply_overrides(ci_cfg, overrides)
        assert build_backbone(cfg, build_stream(cfg), progress=False).checksum() == ci_backbone.checksum(), overrides


def test_a_corpus_without_the_streams_class_names(ci_cfg, ci_stream):
    from mmcl_lab.backbones.binding import build_corpus
    from mmcl_lab.encoders import create_encoder

    tower = create_encoder(ci_cfg.encoders.text)
    full = build_corpus(ci_cfg, tower)
    cut = build_corpus(apply_overrides(ci_cfg, {"pretrain.stream_classes": False}), tower)
    assert set(ci_stream.class_names) <= set(full.class_names)
    assert not set(ci_stream.class_names) & set(cut.class_names)
    assert set(cut.class_names) == set(full.class_names) - set(ci_stream.class_names)
    assert cut.key != full.key
    for pool in cut.pools:  # labels index the shortened vocabulary, every class keeps all its samples
        assert pool.y.min() >= 0 and pool.y.max() < len(cut.class_names) and len(pool.x) == len(pool.y)
        assert {cut.class_modality[c] for c in pool.y.tolist()} == {pool.modality}
    assert sum(len(p.y) for p in cut.pools) < sum(len(p.y) for p in full.pools)
