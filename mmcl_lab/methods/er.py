"""Experience Replay with a small class-balanced memory of features."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, cross_entropy, register_method


@dataclass(frozen=True)
class ERConfig:
    memory_size: int = 200  # stored samples in total, split evenly over the classes seen so far
    replay_batch: int = 32


@register_method("er")
class ER(Method):
    """Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019: every batch is joined by
    a batch drawn from a class-balanced memory; cross-entropy over all seen classes. The memory stores
    frozen features, not raw signals."""

    Config = ERConfig
    uses_memory = True

    def setup(self, model, stream):
        super().setup(model, stream)
        self.memory: dict[int, list[int]] = {}  # task id -> rows of that task's train set

    def before_task(self, model, task):
        self.generator = torch.Generator().manual_seed(10_000 + task.id)

    def loss(self, model, batch, task):
        seen = self.stream.seen_classes(task.id)
        z = self.embed(model, batch.x, batch.space, batch.modality)
        loss = cross_entropy(model, z, batch.y, seen)
        logs = {"ce": loss.item()}
        if self.memory:
            replay = self._replay(model, seen)
            loss = (loss + replay) / 2
            logs["replay"] = replay.item()
        return loss, logs

    def _replay(self, model, seen):
        pool = [(t, r) for t, rows in self.memory.items() for r in rows]
        pick = torch.randint(len(pool), (self.cfg.replay_batch,), generator=self.generator).tolist()
        by_task: dict[int, list[int]] = {}
        for i in pick:
            by_task.setdefault(pool[i][0], []).append(pool[i][1])
        losses = []
        for tid, rows in by_task.items():  # one forward per task: tasks may differ in feature space
            t = self.stream[tid]
            device = model.class_text.device
            z = self.embed(model, t.train_x[rows].to(device), t.feature_space, t.modality)
            losses.append(cross_entropy(model, z, t.train_y[rows].to(device), seen) * len(rows))
        return sum(losses) / len(pick)

    def after_task(self, model, task):
        per_class = max(1, self.cfg.memory_size // len(self.stream.seen_classes(task.id)))
        generator = torch.Generator().manual_seed(20_000 + task.id)
        for t in self.stream.tasks[: task.id + 1]:  # re-balance: every class keeps per_class samples
            keep = []
            for c in t.classes:
                rows = torch.nonzero(t.train_y == c).flatten()
                if t.id == task.id:
                    rows = rows[torch.randperm(len(rows), generator=generator)]
                else:
                    rows = torch.tensor([r for r in self.memory[t.id] if t.train_y[r] == c], dtype=torch.long)
                keep += rows[:per_class].tolist()
            self.memory[t.id] = keep

    def state_dict(self):
        return {"memory": {str(k): v for k, v in self.memory.items()}}

    def load_state_dict(self, state):
        self.memory = {int(k): v for k, v in state["memory"].items()}

    def memory_bytes(self) -> int:
        return sum(len(rows) * self.stream[t].train_x[0].numel() * 4 for t, rows in self.memory.items())
