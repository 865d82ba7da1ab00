"""Elastic Weight Consolidation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..train import iterate_batches
from .base import Method, register_method


@dataclass(frozen=True)
class EWCConfig:
    lam: float = 1000.0  # weight of the quadratic penalty
    decay: float = 1.0  # online EWC: old Fisher information is multiplied by this before adding the new


@register_method("ewc")
class EWC(Method):
    """Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017 (online
    variant of Schwarz et al. 2018): penalise moving parameters that were important for old tasks, with
    importance = diagonal empirical Fisher information of the cross-entropy."""

    Config = EWCConfig

    def setup(self, model, stream):
        super().setup(model, stream)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def loss(self, model, batch, task):
        loss, logs = super().loss(model, batch, task)
        if self.fisher:
            penalty = sum((self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
                          for n, p in model.named_parameters() if n in self.fisher)
            loss = loss + self.cfg.lam / 2 * penalty
            logs["ewc"] = penalty.item()
        return loss, logs

    def after_task(self, model, task):
        device = model.class_text.device
        fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        generator = torch.Generator().manual_seed(task.id)
        batches = list(iterate_batches(self.training_batches(task), 32, generator, device))
        for batch in batches:  # squared mini-batch gradients: the usual cheap estimate of the Fisher
            model.zero_grad(set_to_none=True)
            Method.loss(self, model, batch, task)[0].backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 / len(batches)
        model.zero_grad(set_to_none=True)
        self.fisher = {n: self.cfg.decay * self.fisher.get(n, 0) + f for n, f in fisher.items()}
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}

    def state_dict(self):
        return {**{f"fisher.{n}": f for n, f in self.fisher.items()},
                **{f"anchor.{n}": a for n, a in self.anchor.items()}}

    def load_state_dict(self, state):
        self.fisher = {k[7:]: v for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[7:]: v for k, v in state.items() if k.startswith("anchor.")}
