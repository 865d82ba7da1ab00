"""Elastic Weight Consolidation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..utils import TensorDict
from .base import Method, register_method


@dataclass(frozen=True)
class EWCConfig:
    lam: float = 100.0  # weight of the quadratic penalty
    decay: float = 1.0  # online EWC: old Fisher information is multiplied by this before adding the new
    fisher_batch: int = 64  # samples whose per-sample gradients are computed at once (memory, not result)


@register_method("ewc")
class EWC(Method):
    """Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017 (online
    variant of Schwarz et al. 2018): penalise moving parameters that were important for old tasks, with
    importance = diagonal empirical Fisher information of the cross-entropy: the mean over the task's
    training samples of each sample's squared gradient (per-sample gradients via torch.func, as in the
    paper; squared mini-batch means would be about batch-size times too small)."""

    Config = EWCConfig

    def setup(self, model, context):
        super().setup(model, context)
        self.fisher = TensorDict()  # parameter name -> diagonal Fisher information
        self.anchor = TensorDict()  # parameter name -> its value after the last task

    def before_task(self, model, task):
        if task.id > 0:  # the finished task is consolidated now: see after_task
            self._consolidate(model, self.ctx.tasks[-2])
        # The penalised parameters with their Fisher information and anchors, in one list each: the penalty's
        # gradient is added in one fused pass per step (after_backward), not traced through autograd.
        params = dict(model.named_parameters())
        names = [n for n in params if n in self.fisher]
        self.penalised = ([params[n] for n in names], [self.fisher[n] for n in names], [self.anchor[n] for n in names])

    @torch.no_grad()
    def _penalty(self) -> torch.Tensor:
        params, fisher, anchor = self.penalised
        return sum((f * (p - a) ** 2).sum() for p, f, a in zip(params, fisher, anchor))

    def loss(self, model, batch, task):
        loss, logs = super().loss(model, batch, task)
        if self.penalised[0]:
            penalty = self._penalty()  # its gradient, lam * F * (p - anchor), is added by after_backward
            loss = loss + self.cfg.lam / 2 * penalty
            logs["ewc"] = penalty.item()
        return loss, logs

    @torch.no_grad()
    def after_backward(self, model):
        """d/dp of lam / 2 * sum F (p - anchor)^2 = lam * F * (p - anchor), added to the gradients."""
        params, fisher, anchor = self.penalised
        if params:
            for p in params:  # a parameter the batch did not reach (another modality's adapter) is still pulled back
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            pulls = torch._foreach_mul(torch._foreach_sub(params, anchor), fisher)
            torch._foreach_add_([p.grad for p in params], pulls, alpha=self.cfg.lam)

    def after_task(self, model, task):
        """Nothing yet: a task is consolidated (its Fisher information and anchor) when the next one begins, from the
        model as it left the task, which the next task's start still holds. So the final task, which nothing comes
        after, costs no Fisher pass -- a per-sample gradient of every training sample."""

    def _consolidate(self, model, task):
        fisher = per_sample_fisher(model, task, self.cfg.fisher_batch, self.ctx.device)
        for n, f in fisher.items():  # online EWC: the old information decays, the new adds on
            old = self.fisher[n] if n in self.fisher else 0
            self.fisher[n] = self.cfg.decay * old + f
        for n, p in model.named_parameters():
            if n in fisher:
                self.anchor[n] = p.detach().clone()


def per_sample_fisher(model, task, batch_size: int = 64, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the trainable parameters: mean over task's training samples of the
    squared gradient of each sample's cross-entropy over the task's classes."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    classes = list(task.classes)

    def sample_loss(p, x, target):  # (T, F), () -> one sample's loss
        z = functional_call(model, p, (x[None], task.feature_space), strict=False)  # (1, E)
        return F.cross_entropy(model.logits(z, classes), target[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    target = torch.tensor([classes.index(int(c)) for c in task.train_y])
    with warnings.catch_warnings():  # vmap over CPU attention falls back to a loop, and says so
        warnings.filterwarnings("ignore", message="There is a performance drop")
        for i in range(0, len(target), batch_size):
            grads = per_sample(params, task.train_x[i:i + batch_size].to(device), target[i:i + batch_size].to(device))
            for n, g in grads.items():  # g: (B, *param shape)
                fisher[n] += (g ** 2).sum(0) / len(target)
    return fisher
