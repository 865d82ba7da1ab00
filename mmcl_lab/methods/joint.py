"""Joint training on everything seen so far: the upper bound."""

from __future__ import annotations

import torch

from ..streams import Batch
from .base import Method, cross_entropy, register_method


@register_method("joint")
class Joint(Method):
    """Cumulative training (Avalanche's "Cumulative"): at each step, train on the union of all tasks so far
    with cross-entropy over all seen classes. Not a continual method: it stores all data."""

    uses_memory = True

    def training_batches(self, task):
        pools: dict[tuple[str, str], list] = {}
        for t in self.stream.tasks[: task.id + 1]:
            pools.setdefault((t.feature_space, t.modality), []).append(t)
        return [Batch(torch.cat([t.train_x for t in ts]), torch.cat([t.train_y for t in ts]), space, modality)
                for (space, modality), ts in pools.items()]

    def loss(self, model, batch, task):
        z = self.embed(model, batch.x, batch.space, batch.modality)
        ce = cross_entropy(model, z, batch.y, self.stream.seen_classes(task.id))
        return ce, {"ce": ce.item()}

    def memory_bytes(self) -> int:
        return sum(t.train_x.numel() * t.train_x.element_size() for t in self.stream.tasks)
