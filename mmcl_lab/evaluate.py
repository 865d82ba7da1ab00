"""Accuracy of every task, and retrieval per modality, after every step, with and without the modality identity, as
tidy rows; the zero-shot table of an untouched backbone."""

from __future__ import annotations

import torch

from . import retrieval
from .batches import in_chunks

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
def evaluate(model, method, stream, step: int, device: torch.device, batch_size: int = 1024,
             embedded: dict[tuple[int, str | None], torch.Tensor] | None = None) -> tuple[list[dict], list[dict]]:
    """(accuracy rows, retrieval rows) after step, from one embedding of every test sample per setting, batch_size
    samples at a time. embedded, if given, receives those embeddings, (task id, modality hint) -> (N, E), for the
    probes to reuse (probe.capture).

    Accuracy: one row per (setting, task): step, task, modality, setting, metric, value, n. metric "acc" is over
    label_space(); for the task just trained, "acc_final_space" is the same model over the stream's final
    label space, which separates label-space growth from forgetting (metrics.label_growth).

    Retrieval (none before training): per setting and modality with a trained task, Recall@K and mAP both ways
    (retrieval.both_ways) over the test samples of the modality's tasks trained by step and the label space of
    accuracy -- with the modality given, its seen classes; hidden, every seen class. One row per (direction,
    metric): step, modality, setting, direction, metric, value, queries."""
    model.eval()
    settings = SETTINGS if stream.modality_id_at_test else ("agnostic",)
    embedded = {} if embedded is None else embedded  # (task, hint) -> (N, E)
    rows, found = [], []
    for setting in settings:
        seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # modality -> (z, y) of its trained tasks
        for task in stream:
            hint = task.modality if setting == "known" and method.reads_modality else None
            if (task.id, hint) not in embedded:  # a method blind to the hint is embedded once for both settings
                embedded[task.id, hint] = in_chunks(lambda x: method.embed(model, x, task.feature_space, hint),
                                                    task.test_x, batch_size, device)  # (N, E)
            z, y = embedded[task.id, hint], task.test_y.to(device)
            row = dict(step=step, task=task.id, modality=task.modality, setting=setting, n=len(y))
            acc = _accuracy(model, z, y, label_space(stream, step, task, setting))
            rows.append({**row, "metric": "acc", "value": acc})
            if task.id == step:
                final = label_space(stream, len(stream) - 1, task, setting)
                rows.append({**row, "metric": "acc_final_space", "value": _accuracy(model, z, y, final)})
            if task.id <= step:
                seen.setdefault(task.modality, []).append((z, y))
        for modality, parts in seen.items():
            z, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])  # (N, E), (N,)
            classes = label_space(stream, step, next(t for t in stream if t.modality == modality), setting)
            for direction, scores in retrieval.both_ways(z, y, model.class_text, classes).items():
                queries = len(y) if direction == "x_to_text" else len(torch.unique(y))
                found += [dict(step=step, modality=modality, setting=setting, direction=direction, metric=name,
                               value=value, queries=queries) for name, value in scores.items()]
    return rows, found


@torch.no_grad()
def zero_shot_table(model, stream, device: torch.device | str = "cpu", batch_size: int = 1024) -> list[dict]:
    """Per modality, the untouched model on every test sample of the stream: accuracy over the modality's
    classes (modality given), over all of the stream's classes (hidden), and text-to-sample Recall@1 (is the
    test sample nearest to each class text one of that class's)."""
    model.eval()
    rows = []
    for m in stream.modalities:
        tasks = [t for t in stream if t.modality == m]
        z = torch.cat([in_chunks(lambda x: model.embed(x, t.feature_space), t.test_x, batch_size, device)
                       for t in tasks])  # (N, E)
        y = torch.cat([t.test_y for t in tasks]).to(device)
        own = [c for t in tasks for c in t.classes]
        everything = list(range(len(stream.class_names)))
        acc = {setting: _accuracy(model, z, y, classes)
               for setting, classes in (("known", own), ("agnostic", everything))}
        recall = retrieval.both_ways(z, y, model.class_text, own)["text_to_x"]["R@1"]
        rows.append(dict(modality=m, known=acc["known"], agnostic=acc["agnostic"], text_to_sample_r1=recall,
                         classes=len(own), chance_known=1 / len(own), chance_agnostic=1 / len(everything)))
    return rows
