import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import head
from mmcl_lab.batches import Batch
from mmcl_lab.config import ConfigError, MethodConfig, apply_overrides
from mmcl_lab.methods import Context, Method, check_assumptions, create_method
from mmcl_lab.metrics import accuracy_matrix
from mmcl_lab.registry import METHODS
from mmcl_lab.run import Run, run_stream


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_fills_the_matrix_and_round_trips_its_state(name, ci_cfg, ci_stream, ci_backbone,
                                                                        tmp_path):
    stream = head(ci_stream, 4)
    cfg = apply_overrides(ci_cfg, {"method.name": name})
    run = run_stream(cfg, tmp_path / name, stream, backbone=ci_backbone)
    for setting in ("known", "agnostic"):
        R, init = accuracy_matrix(run.results(), setting)
        assert R.shape == (4, 4) and np.isfinite(R).all() and np.isfinite(init).all()

    assert all(torch.isfinite(t).all() for probe in run.probes().values() for t in probe.values())

    # every method but chance starts from the one pretrained backbone
    start = json.loads((run.path / "provenance.json").read_text())["start_weights"]
    assert (start == ci_backbone.checksum()) == (name != "chance")

    # state round-trip: a fresh method loaded from the last checkpoint embeds exactly like the saved one
    torch.manual_seed(0)
    model, method = ci_backbone.model(stream), create_method(cfg.method)
    method.setup(model, Context.replay(stream, 3, backbone=ci_backbone))
    Run(run.path).load_checkpoint(3, model, method)
    probes = run.probes()[3]
    task = stream[0]
    with torch.no_grad():
        z = method.embed(model, task.test_x[task.probe], task.feature_space, task.modality)
    assert torch.allclose(z, probes["known"][: len(task.probe)], atol=1e-5)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).trains])
def test_training_changes_the_model_or_its_prompts_with_a_finite_loss(name, ci_cfg, ci_stream, ci_backbone):
    stream = head(ci_stream, 2)
    torch.manual_seed(0)
    model = ci_backbone.model(stream)
    method = create_method(MethodConfig(name))
    context = Context.replay(stream, backbone=ci_backbone)
    method.setup(model, context)
    before = [p.detach().clone() for p in model.parameters()]
    needs_grad = [p.requires_grad for p in model.parameters()]
    frozen = name in ("comm", "l2p")  # prompt methods keep the pretrained backbone as it is
    for task in stream:
        context.reveal(task)
        method.before_task(model, task)
        from mmcl_lab.batches import Batch
        batch = Batch(task.train_x[:8], task.train_y[:8], task.feature_space, task.modality)
        loss, logs = method.loss(model, batch, task)
        assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values())
        method.fit_task(model, task, ci_cfg.train)
        method.after_task(model, task)
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert not any(moved) if frozen else any(moved)
    assert [p.requires_grad for p in model.parameters()] == needs_grad  # the loop's freeze is undone
    if frozen:  # and it spared backward every weight gradient of the backbone
        assert all(p.grad is None for p in model.parameters())
        prompts = method.prompts.values() if name == "comm" else [method.prompts]
        assert any(p.abs().sum() > 0 for p in prompts)  # prompts start at zero (comm) or are trained (l2p)


@pytest.mark.parametrize("name", ["comm", "l2p"])
def test_values_fixed_during_a_task_take_one_pass_and_change_no_result(name, ci_cfg, ci_stream, ci_backbone,
                                                                      tmp_path, monkeypatch):
    """COMM's routing and SR target and L2P's query come from one pass over the task's pool per fit
    (Method.fixed_per_sample), not one per step, and the run equals one that computes them at every step."""
    stream = head(ci_stream, 5)  # task 4 is the image modality's second: COMM routes and self-regularises
    cfg = apply_overrides(ci_cfg, {"method.name": name})
    passes = {}
    real = Method.fixed_per_sample

    def counted(self, key, batch, task, fn):
        def fn_counted(x):
            passes[key, task.id] = passes.get((key, task.id), 0) + 1
            return fn(x)
        return real(self, key, batch, task, fn_counted)

    monkeypatch.setattr(Method, "fixed_per_sample", counted)
    cached = run_stream(cfg, tmp_path / "cached", stream, backbone=ci_backbone).results()
    chunks = {t.id: -(-len(t.train_y) // ci_cfg.train.eval_batch_size) for t in stream}
    assert passes and all(n == chunks[tid] for (_, tid), n in passes.items()), passes
    assert {key for key, _ in passes} == ({"relevance", "sr target"} if name == "comm" else {"query"})

    monkeypatch.setattr(Method, "fixed_per_sample", lambda self, key, batch, task, fn: torch.no_grad()(fn)(batch.x))
    every_step = run_stream(cfg, tmp_path / "every_step", stream, backbone=ci_backbone).results()
    pd.testing.assert_frame_equal(cached, every_step)


def test_zeroshot_keeps_the_pretrained_weights_bit_identical_and_has_zero_fwt(ci_cfg, ci_stream, ci_backbone,
                                                                               tmp_path):
    from mmcl_lab.backbones.binding import weights_checksum
    from mmcl_lab.metrics import summary
    from mmcl_lab.run import load_tensors

    stream = head(ci_stream, 3)
    run = run_stream(apply_overrides(ci_cfg, {"method.name": "zeroshot"}), tmp_path / "z", stream)
    for step in range(3):
        weights = load_tensors(run.checkpoint_dir(step) / "model.safetensors")
        assert weights_checksum(weights) == ci_backbone.checksum()
    table = summary(run.results())
    fwt = table.fwt.dropna()  # NaN: a modality whose only task is the first
    assert len(fwt) and (fwt == 0.0).all()  # never trained: no forward transfer, exactly
    # and all its apparent forgetting is label-space growth, which the summary reports apart
    assert (table.bwt + table.growth).dropna().abs().max() < 1e-12


def test_method_needing_the_modality_is_refused_when_it_is_hidden(ci_stream):
    class NeedsModality(Method):
        needs_modality_id = True

    hidden = head(ci_stream, 2)
    hidden.modality_id_at_test = False
    with pytest.raises(ValueError, match="needs the modality identity.*modality_id_at_test=False"):
        check_assumptions(NeedsModality(), hidden)
    check_assumptions(NeedsModality(), head(ci_stream, 2))


def test_hidden_modality_evaluates_only_agnostic(ci_cfg, ci_stream, tmp_path):
    stream = head(ci_stream, 2)
    stream.modality_id_at_test = False
    run = run_stream(apply_overrides(ci_cfg, {"stream.modality_id_at_test": False}), tmp_path / "h", stream)
    assert set(run.results().setting) == {"agnostic"}


@pytest.mark.parametrize("params", [{"self_reg": "off"}, {"relevance": "off"}, {"realign": "off"},
                                    {"realign": "shared", "covariance": "diag"}, {"self_reg": "kl"},
                                    {"relevance_training": "joint"}, {"prompt_depth": 0}, {"prompt_depth": 1}])
def test_comm_switches_run(params, ci_cfg, ci_stream, tmp_path):
    cfg = apply_overrides(ci_cfg, {"method.name": "comm", **{f"method.params.{k}": v for k, v in params.items()}})
    run = run_stream(cfg, tmp_path / "c", head(ci_stream, 4))
    assert run.latest_step() == 3


def test_comm_zero_prompts_stay_zero_and_still_shift_the_backbone(ci_cfg, ci_stream, ci_backbone, tmp_path):
    """The ablation that separates a zero prompt's shift from training: with train_prompts=false every prompt ends as
    it began, all zeros, and yet a zero prompt moves the backbone's output (attention attends to the tokens)."""
    cfg = apply_overrides(ci_cfg, {"method.name": "comm", "method.params.train_prompts": False})
    run = run_stream(cfg, tmp_path / "z", head(ci_stream, 4), backbone=ci_backbone)
    prompts = {k: v for k, v in run.read_checkpoint(3)["method"].items() if k.startswith("prompts.")}
    assert len(prompts) == 4 and all(not v.any() for v in prompts.values())
    model, task = ci_backbone.model(ci_stream).eval(), ci_stream[0]
    with torch.no_grad():
        bare = model.embed(task.test_x[:8], task.feature_space)
        zero = model.embed(task.test_x[:8], task.feature_space, torch.zeros(ci_cfg.model.layers, 4, ci_cfg.model.dim))
    assert not torch.allclose(bare, zero, atol=1e-4)


def test_ewc_adds_the_gradient_of_its_penalty(ci_cfg, ci_stream, ci_backbone):
    """EWC adds lam * F * (p - anchor) to the gradients after backward instead of tracing its penalty: the same
    gradients as autograd through loss + lam / 2 * sum F (p - anchor)^2, parameters the batch missed included."""
    stream = head(ci_stream, 2)
    model = ci_backbone.model(stream)
    method = create_method(MethodConfig("ewc", {"lam": 3.0}))
    method.setup(model, Context.replay(stream, 0, backbone=ci_backbone))
    gen = torch.Generator().manual_seed(0)
    for n, p in model.named_parameters():
        if p.requires_grad:
            method.fisher[n] = torch.rand(p.shape, generator=gen)
            method.anchor[n] = p.detach() + 0.1 * torch.randn(p.shape, generator=gen)
    task = stream[0]  # the first task: before_task consolidates nothing, so these Fisher values stay
    method.before_task(model, task)
    batch = method.training_batches(task)[0]
    batch = Batch(batch.x[:8], batch.y[:8], batch.space, batch.modality)
    loss, _ = method.loss(model, batch, task)
    loss.backward()
    method.after_backward(model)
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    plain, _ = Method.loss(method, model, batch, task)
    penalty = sum((method.fisher[n] * (p - method.anchor[n]) ** 2).sum() for n, p in model.named_parameters()
                  if p.requires_grad)
    (plain + 3.0 / 2 * penalty).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(ours[n], p.grad, atol=1e-6), n


def test_comm_rejects_unknown_choices():
    with pytest.raises(ConfigError, match="comm realign='sometimes'; choose from modality, shared, off"):
        create_method(MethodConfig("comm", {"realign": "sometimes"}))


def test_comm_realignment_only_acts_after_it_has_statistics(ci_cfg, ci_stream, ci_backbone):
    stream = head(ci_stream, 2)
    torch.manual_seed(0)
    model = ci_backbone.model(stream)
    method = create_method(MethodConfig("comm"))
    context = Context.replay(stream)
    method.setup(model, context)
    task = stream[0]
    x = task.test_x[:4]
    assert torch.equal(method.embed(model, x, task.feature_space, "image"),
                       method.embed(model, x, task.feature_space, "image", aligned=False))
    context.reveal(task)
    method.before_task(model, task)
    method.fit_task(model, task, ci_cfg.train)
    method.after_task(model, task)
    assert set(method.class_stats.keys()) == set(task.classes)
    assert not torch.allclose(method.embed(model, x, task.feature_space, "image"),
                              method.embed(model, x, task.feature_space, "image", aligned=False))


def test_er_memory_is_class_balanced_bounded_and_holds_copies(ci_cfg, ci_stream, ci_backbone):
    stream = head(ci_stream, 3)
    model = ci_backbone.model(stream)
    method = create_method(MethodConfig("er", {"memory_size": 30}))
    context = Context.replay(stream)
    method.setup(model, context)
    for task in stream:
        context.reveal(task)
        method.before_task(model, task)
        method.after_task(model, task)
    sizes = {c: len(x) for c, x in method.memory.items()}
    assert sum(sizes.values()) <= 30
    assert set(sizes) == set(stream.seen_classes(2)) and len(set(sizes.values())) == 1
    for t in stream:  # copies of the task's features, not views into the stream's tensors
        for c in t.classes:
            assert method.memory[c].data_ptr() != t.train_x.data_ptr()
            assert all(any(torch.equal(row, x) for x in t.train_x[t.train_y == c]) for row in method.memory[c])
    assert method.memory_bytes() == sum(x.numel() * x.element_size() for x in method.memory.values())


def _er_memory(ci_cfg, stream, seed: int, tmp_path, backbone) -> dict:
    cfg = apply_overrides(ci_cfg, {"method.name": "er", "seed": seed, "method.params.memory_size": 20})
    run = run_stream(cfg, tmp_path / f"er{seed}", stream, backbone=backbone)
    model, method = backbone.model(stream), create_method(cfg.method)
    method.setup(model, Context.replay(stream, 1))
    Run(run.path).load_checkpoint(1, model, method)
    return {"memory": method.memory, "results": run.results()}


def test_the_run_seed_reaches_every_random_choice(ci_cfg, ci_stream, ci_backbone, tmp_path):
    stream = head(ci_stream, 2)
    a, again, b = (_er_memory(ci_cfg, stream, seed, tmp_path / str(i), ci_backbone) for i, seed in enumerate((0, 0, 1)))
    assert all(torch.equal(a["memory"][c], again["memory"][c]) for c in a["memory"])
    assert a["results"].equals(again["results"])  # the same seed: the same table
    assert any(not torch.equal(a["memory"][c], b["memory"][c]) for c in a["memory"])  # another seed: another memory
    ctx = Context(("image",), torch.device("cpu"), 0)
    draws = {seed: torch.randn(3, generator=Context(("image",), torch.device("cpu"), seed).rng("x")) for seed in (0, 1)}
    assert not torch.equal(draws[0], draws[1])
    assert not torch.equal(torch.randn(3, generator=ctx.rng("x")), torch.randn(3, generator=ctx.rng("y")))


class _Spy(Method):
    """Records what its context shows as each task begins."""

    log: list = []

    def before_task(self, model, task):
        self.log.append(([t.id for t in self.ctx.tasks], self.ctx))


def test_methods_see_only_the_past(ci_cfg, ci_stream, tmp_path, monkeypatch):
    from mmcl_lab.registry import METHODS as registry

    monkeypatch.setitem(registry._entries, "spy", _Spy)
    stream = head(ci_stream, 3)
    run_stream(apply_overrides(ci_cfg, {"method.name": "spy"}), tmp_path / "spy", stream)
    assert [ids for ids, _ in _Spy.log] == [[0], [0, 1], [0, 1, 2]]  # the current task and earlier ones
    context = _Spy.log[-1][1]
    assert not any(hasattr(context, name) for name in ("stream", "_stream"))
    with pytest.raises(ValueError, match="tasks come in order"):
        context.reveal(stream[2])
