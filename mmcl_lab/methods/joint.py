"""Joint training on everything seen so far: the upper bound."""

from __future__ import annotations

import torch

from ..batches import Batch
from ..utils import TensorDict
from .base import Method, cross_entropy, register_method


@register_method("joint")
class Joint(Method):
    """Cumulative training (Avalanche's "Cumulative"): at each step, train on the union of all tasks so far
    with cross-entropy over all seen classes. Not a continual method: it keeps a copy of all data."""

    uses_memory = True

    def setup(self, model, context):
        super().setup(model, context)
        self.xs = TensorDict(key_type=int)  # task id -> copy of its training features
        self.ys = TensorDict(key_type=int)  # task id -> copy of its labels

    def before_task(self, model, task):
        self.xs[task.id], self.ys[task.id] = task.train_x.clone(), task.train_y.clone()

    def training_batches(self, task):
        pools: dict[tuple[str, str], list[int]] = {}
        for t in self.ctx.tasks:
            pools.setdefault((t.feature_space, t.modality), []).append(t.id)
        return [Batch(torch.cat([self.xs[i] for i in ids]), torch.cat([self.ys[i] for i in ids]), space, modality)
                for (space, modality), ids in pools.items()]

    def loss(self, model, batch, task):
        z = self.embed(model, batch.x, batch.space, batch.modality)
        ce = cross_entropy(model, z, batch.y, self.ctx.seen_classes())
        return ce, {"ce": ce.item()}
