"""Accuracy of every task after every step, with and without the modality identity, as tidy rows."""

from __future__ import annotations

import torch

SETTINGS = ("known", "agnostic")  # modality identity given at test time, or not


def label_space(stream, step: int, task, setting: str) -> list[int]:
    """Classes a prediction may choose from: those seen by step, restricted to the task's modality when the
    identity is known. A task still to come is scored as just before it is trained -- over the classes
    seen by then plus its own -- so the step -1 row and R[j-1, j] share a label space and FWT compares like
    with like (a never-trained model has FWT exactly 0)."""
    classes = stream.seen_classes(max(step, task.id))
    if setting == "known":
        classes = [c for c in classes if stream.class_modality[c] == task.modality]
    return classes


def _accuracy(model, z, y, classes: list[int]) -> float:
    pred = torch.tensor(classes, device=z.device)[model.logits(z, classes).argmax(1)]
    return (pred == y).float().mean().item() if len(y) else float("nan")


@torch.no_grad()
def evaluate(model, method, stream, step: int, device: torch.device) -> list[dict]:
    """One row per (setting, task): step, task, modality, setting, metric, value, n. metric "acc" is over
    label_space(); for the task just trained, "acc_final_space" is the same model over the stream's final
    label space, which separates label-space growth from forgetting (metrics.label_growth)."""
    model.eval()
    settings = SETTINGS if stream.modality_id_at_test else ("agnostic",)
    rows = []
    for setting in settings:
        for task in stream:
            x, y = task.test_x.to(device), task.test_y.to(device)
            z = method.embed(model, x, task.feature_space, task.modality if setting == "known" else None)
            row = dict(step=step, task=task.id, modality=task.modality, setting=setting, n=len(y))
            acc = _accuracy(model, z, y, label_space(stream, step, task, setting))
            rows.append({**row, "metric": "acc", "value": acc})
            if task.id == step:
                final = label_space(stream, len(stream) - 1, task, setting)
                rows.append({**row, "metric": "acc_final_space", "value": _accuracy(model, z, y, final)})
    return rows


@torch.no_grad()
def zero_shot_table(model, stream, device: torch.device | str = "cpu") -> list[dict]:
    """Per modality, the untouched model on every test sample of the stream: accuracy over the modality's
    classes (modality given), over all of the stream's classes (hidden), and text-to-sample Recall@1 (is the
    test sample nearest to each class text one of that class's)."""
    model.eval()
    rows = []
    for m in stream.modalities:
        tasks = [t for t in stream if t.modality == m]
        z = torch.cat([model.embed(t.test_x.to(device), t.feature_space) for t in tasks])  # (N, E)
        y = torch.cat([t.test_y for t in tasks]).to(device)
        own = [c for t in tasks for c in t.classes]
        everything = list(range(len(stream.class_names)))
        acc = {setting: _accuracy(model, z, y, classes)
               for setting, classes in (("known", own), ("agnostic", everything))}
        nearest = y[model.logits(z, own).argmax(0)]  # (C,) the class of each text's nearest sample
        recall = (nearest == torch.tensor(own, device=device)).float().mean().item()
        rows.append(dict(modality=m, known=acc["known"], agnostic=acc["agnostic"], text_to_sample_r1=recall,
                         classes=len(own), chance_known=1 / len(own), chance_agnostic=1 / len(everything)))
    return rows
