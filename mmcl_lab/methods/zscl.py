"""ZSCL: distillation from the frozen pretrained model on reference data, plus a weight ensemble."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..batches import iterate_batches
from .base import Method, register_method
from .lwf import distill, snapshot_bytes


@dataclass(frozen=True)
class ZSCLConfig:
    alpha: float = 1.0  # weight of the distillation term
    temperature: float = 2.0  # softens teacher and student distributions
    ref_batch: int = 32  # reference samples distilled per training step
    ensemble_every: int = 10  # steps between weight-ensemble updates (ZSCL's we_freq); 0 = no ensemble


@register_method("zscl")
class ZSCL(Method):
    """Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language
    Models", ICCV 2023. While fine-tuning on each task: (1) distil the *frozen pretrained* model's
    similarity distribution over a reference vocabulary on reference data -- here the pretraining corpus's
    samples (all modalities) and its whole vocabulary of class texts, standing in for ConceptualCaptions /
    ImageNet and its class names; (2) keep a running average of the weights every `ensemble_every` steps,
    theta_hat <- (theta_hat * n + theta) / (n + 1), started from the weights the task began with (the
    pretrained weights at the first task), and end the task with the average (the paper's WE).
    The text tower is frozen here, so only the sample side is distilled."""

    Config = ZSCLConfig

    def setup(self, model, context):
        super().setup(model, context)
        if context.backbone is None or context.backbone.reference is None:
            raise ValueError("zscl needs a backbone that knows its pretraining data (Context(..., backbone=...))")
        # The frozen pretrained model: rebuilt from the backbone at every setup, so not module state.
        self.keep_unsaved("teacher", copy.deepcopy(model).eval().requires_grad_(False))
        corpus = context.backbone.reference
        self.teacher.class_text = corpus.class_text.to(context.device)  # the reference vocabulary
        self.reference = corpus.pools

    def memory_bytes(self) -> int:
        """The frozen pretrained model kept as the teacher (the reference corpus is shared, external data)."""
        return snapshot_bytes(self.teacher)

    def before_task(self, model, task):
        # Reference batches and the ensemble restart per task, so resuming after a task reproduces them.
        self.generator = self.ctx.rng("reference batches")
        self.ref_batches = iter(())
        self.average = [p.detach().clone() for p in model.parameters()]
        self.n_averaged, self.steps = 1, 0

    def _reference_batch(self, device):
        batch = next(self.ref_batches, None)
        if batch is None:  # a new pass over the corpus in a fresh shuffled order
            self.ref_batches = iterate_batches(self.reference, self.cfg.ref_batch, self.generator, device)
            batch = next(self.ref_batches)
        return batch

    def loss(self, model, batch, task):
        loss, logs = super().loss(model, batch, task)
        ref = self._reference_batch(self.ctx.device)
        text = self.teacher.class_text
        with torch.no_grad():
            target = self.teacher.embed(ref.x, ref.space) @ text.T / self.teacher.temperature
        student = model.embed(ref.x, ref.space) @ text.T / model.temperature
        kd = distill(student, target, self.cfg.temperature)
        logs["distill"] = kd.item()
        return loss + self.cfg.alpha * kd, logs

    @torch.no_grad()
    def after_backward(self, model):
        """Every ensemble_every steps, fold the weights into the running average (the weights as the last
        optimiser step left them: this hook runs before the next one)."""
        self.steps += 1
        if self.cfg.ensemble_every and self.steps % self.cfg.ensemble_every == 0:
            n = self.n_averaged
            for avg, p in zip(self.average, model.parameters()):
                avg.mul_(n / (n + 1)).add_(p.detach(), alpha=1 / (n + 1))
            self.n_averaged += 1

    @torch.no_grad()
    def after_task(self, model, task):
        if self.cfg.ensemble_every:
            for avg, p in zip(self.average, model.parameters()):
                p.copy_(avg)
