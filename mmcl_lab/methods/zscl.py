"""ZSCL-style distillation over a reference vocabulary plus weight ensembling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import register_method
from .lwf import LwF


@dataclass(frozen=True)
class ZSCLConfig:
    alpha: float = 1.0  # weight of the distillation term
    temperature: float = 2.0
    ensemble: bool = True  # average weights over task ends (ZSCL's weight ensemble)


@register_method("zscl")
class ZSCL(LwF):
    """Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language
    Models", ICCV 2023. Distil the previous model's similarity distribution over a reference vocabulary --
    here every class text of the stream, seen or not, from every modality -- and keep a running average
    of the weights at task ends: theta_hat_t = theta_t / (t+1) + theta_hat_{t-1} * t / (t+1)."""

    Config = ZSCLConfig

    def distill_classes(self, task) -> None:
        return None  # all class texts: the reference vocabulary

    def after_task(self, model, task):
        if self.cfg.ensemble and self.teacher is not None:
            w = 1.0 / (task.id + 1)
            with torch.no_grad():
                for p, old in zip(model.parameters(), self.teacher.parameters()):
                    p.mul_(w).add_(old, alpha=1 - w)
