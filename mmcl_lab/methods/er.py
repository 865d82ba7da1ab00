"""Experience Replay with a small class-balanced memory of features."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils import TensorDict
from .base import Method, cross_entropy, register_method


@dataclass(frozen=True)
class ERConfig:
    memory_size: int = 200  # stored feature samples in total, split evenly over the classes seen so far
    replay_batch: int = 32


@register_method("er")
class ER(Method):
    """Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019: every batch is joined by
    a batch drawn from a class-balanced memory; cross-entropy over all seen classes. The memory holds copies
    of frozen features (not raw signals, not indices into the stream), chosen at random per class and
    shrunk evenly as classes arrive; its bytes are what memory_bytes() reports."""

    Config = ERConfig
    uses_memory = True

    def setup(self, model, context):
        super().setup(model, context)
        self.memory = TensorDict(key_type=int)  # class id -> (n, T, F) stored features

    def before_task(self, model, task):
        self.replay_rng = self.ctx.rng("replay draws")

    def loss(self, model, batch, task):
        seen = self.ctx.seen_classes()
        replay = self._draw() if self.memory else {}
        mine = replay.pop((batch.space, batch.modality), None)  # replayed features of the batch's own space
        x = batch.x if mine is None else torch.cat([batch.x, mine[0]])  # one forward for both (B + R, T, F)
        z = self.embed(model, x, batch.space, batch.modality)
        loss = cross_entropy(model, z[:len(batch.y)], batch.y, seen)
        logs = {"ce": loss.item()}
        if self.memory:
            parts = [] if mine is None else [cross_entropy(model, z[len(batch.y):], mine[1], seen) * len(mine[1])]
            for (space, modality), (rx, ry) in replay.items():  # another feature space: its own forward
                parts.append(cross_entropy(model, self.embed(model, rx, space, modality), ry, seen) * len(ry))
            replayed = sum(parts) / self.cfg.replay_batch
            loss = (loss + replayed) / 2
            logs["replay"] = replayed.item()
        return loss, logs

    def _draw(self) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
        """replay_batch stored samples drawn uniformly from the memory, grouped by (feature space, modality): stored
        classes may differ in token count. (x (R, T, F), y (R,)) per group, on the device."""
        pool = [(c, i) for c in sorted(self.memory) for i in range(len(self.memory[c]))]
        pick = torch.randint(len(pool), (self.cfg.replay_batch,), generator=self.replay_rng).tolist()
        where = {c: (t.feature_space, t.modality) for t in self.ctx.tasks for c in t.classes}
        groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i in pick:
            groups.setdefault(where[pool[i][0]], []).append(pool[i])
        device = self.ctx.device
        return {key: (torch.stack([self.memory[c][i] for c, i in items]).to(device),
                      torch.tensor([c for c, _ in items], device=device)) for key, items in groups.items()}

    def after_task(self, model, task):
        per_class = max(1, self.cfg.memory_size // len(self.ctx.seen_classes()))
        rng = self.ctx.rng("memory selection")
        for c in task.classes:
            rows = torch.nonzero(task.train_y == c).flatten()
            rows = rows[torch.randperm(len(rows), generator=rng)][:per_class]
            self.memory[c] = task.train_x[rows].clone()
        for c in self.memory:  # re-balance: every class keeps at most per_class samples
            self.memory[c] = self.memory[c][:per_class]
