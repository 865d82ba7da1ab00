"""Accuracy of every task after every step, with and without the modality identity, as tidy rows."""

from __future__ import annotations

import torch

SETTINGS = ("known", "agnostic")  # modality identity given at test time, or not


def label_space(stream, step: int, task, setting: str) -> list[int]:
    """Classes a prediction may choose from: seen ones (plus the task's own if it is still to come),
    restricted to the task's modality when the identity is known."""
    classes = stream.seen_classes(step)
    if task.id > step:  # zero-shot on a future task: its own class names join the label space
        classes = classes + list(task.classes)
    if setting == "known":
        classes = [c for c in classes if stream.class_modality[c] == task.modality]
    return classes


@torch.no_grad()
def evaluate(model, method, stream, step: int, device: torch.device) -> list[dict]:
    """One row per (setting, task): step, task, modality, setting, metric, value, n."""
    model.eval()
    settings = SETTINGS if stream.modality_id_at_test else ("agnostic",)
    rows = []
    for setting in settings:
        for task in stream:
            x, y = task.test_x.to(device), task.test_y.to(device)
            z = method.embed(model, x, task.feature_space, task.modality if setting == "known" else None)
            classes = label_space(stream, step, task, setting)
            pred = torch.tensor(classes, device=device)[model.logits(z, classes).argmax(1)]
            acc = (pred == y).float().mean().item() if len(y) else float("nan")
            rows.append(dict(step=step, task=task.id, modality=task.modality, setting=setting,
                             metric="acc", value=acc, n=len(y)))
    return rows
