"""Learning without Forgetting."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Method, cross_entropy, register_method


@dataclass(frozen=True)
class LwFConfig:
    alpha: float = 1.0  # weight of the distillation term
    temperature: float = 2.0  # softens the old and new distributions over old classes


def distill(student_logits, teacher_logits, temperature: float):
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def snapshot_bytes(model) -> int:
    """Bytes of a kept model copy (parameters and buffers); 0 for none."""
    if model is None:
        return 0
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


@register_method("lwf")
class LwF(Method):
    """Li & Hoiem, "Learning without Forgetting", TPAMI 2017: on new data, keep the predictions over old
    classes close to those of the model as it was before the task."""

    Config = LwFConfig

    teacher = None  # the model as it was before the current task: rebuilt every task, so not module state

    def before_task(self, model, task):
        self.keep_unsaved("teacher", copy.deepcopy(model).eval().requires_grad_(False) if task.id > 0 else None)

    def memory_bytes(self) -> int:
        """The snapshot of the model kept while the next task trains."""
        return snapshot_bytes(self.teacher)

    def loss(self, model, batch, task):
        z = self.embed(model, batch.x, batch.space, batch.modality)
        loss = cross_entropy(model, z, batch.y, list(task.classes))
        logs = {"ce": loss.item()}
        if self.teacher is not None:
            classes = self.ctx.seen_classes(task.id - 1)  # the old classes' similarity distribution is distilled
            with torch.no_grad():
                target = self.teacher.logits(self.teacher.embed(batch.x, batch.space), classes)
            kd = distill(model.logits(z, classes), target, self.cfg.temperature)
            loss = loss + self.cfg.alpha * kd
            logs["distill"] = kd.item()
        return loss, logs
