"""Slow Learner with Classifier Alignment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..gaussians import GaussianBank, identity_map, train_alignment
from .base import Method, register_method


@dataclass(frozen=True)
class SLCAConfig:
    lr_scale: float = 0.1  # slow learner: the head trains at this fraction of train.lr
    covariance: str = "full"  # full | lowrank | diag
    align_samples: int = 128  # pseudo-features drawn per class
    align_epochs: int = 5
    align_lr: float = 1e-3


@register_method("slca")
class SLCA(Method):
    """Zhang et al., "SLCA: Slow Learner with Classifier Alignment", ICCV 2023: train the representation
    slowly, store a Gaussian per class, and after each task re-fit the classifier on samples drawn from
    all class Gaussians. Our classifier is the fixed class texts, so the alignment is a linear map on the
    embedding (identity at start) trained over all seen classes."""

    Config = SLCAConfig
    uses_modality_hint = False  # one alignment map for every modality

    def setup(self, model, context):
        super().setup(model, context)
        self.bank = GaussianBank(self.cfg.covariance)
        self.align = identity_map(model.class_text.shape[1]).to(context.device)

    def trainable_parameters(self, model, task):
        return [{"params": list(model.parameters()), "lr_scale": self.cfg.lr_scale}]

    def embed(self, model, x, space, modality, aligned=True):
        z = model.embed(x, space)
        return F.normalize(self.align(z), dim=-1) if aligned and self.bank.keys() else z

    @torch.no_grad()
    def _fit_stats(self, model, task):
        z = self.model_embed_all(model, task.train_x, task.feature_space)  # (N, E)
        for c in task.classes:
            self.bank.add(c, z[task.train_y.to(z.device) == c])

    def after_task(self, model, task):
        self._fit_stats(model, task)
        generator = self.ctx.rng("classifier alignment")
        seen = self.ctx.seen_classes(task.id)
        n = self.cfg.align_samples
        samples = torch.cat([self.bank.sample(c, n, generator) for c in seen])
        labels = torch.tensor(seen, device=samples.device).repeat_interleave(n)
        train_alignment(self.align, model.class_text, seen, samples, labels, model.temperature,
                        self.cfg.align_epochs, self.cfg.align_lr, generator)
