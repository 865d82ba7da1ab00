"""A fixed probe set embedded after every task, and pure measures of drift and modality bias."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .batches import in_chunks
from .retrieval import both_ways

# ---- capture -------------------------------------------------------------------------------------------


@torch.no_grad()
def capture(model, method, stream, device, batch_size: int = 1024,
            embedded: dict[tuple[int, str | None], Tensor] | None = None) -> tuple[dict[str, Tensor], dict]:
    """Probe embeddings (N, E) with the modality known, unknown, and known without re-alignment, batch_size samples
    at a time; embedded (evaluate's embeddings of the whole test data, (task id, hint) -> (N, E)) supplies the
    aligned ones it holds, since the probes are test samples."""
    model.eval()
    out: dict[str, list[Tensor]] = {"known": [], "agnostic": [], "known_unaligned": []}
    meta = {"label": [], "task": [], "modality": [], "sample": []}
    for task in stream:
        x, space = task.test_x[task.probe], task.feature_space
        done = {(hint, True): z[task.probe].cpu() for (tid, hint), z in (embedded or {}).items() if tid == task.id}
        for kind, hint, aligned in (("known", task.modality, True), ("agnostic", None, True),
                                    ("known_unaligned", task.modality, False)):
            hint = hint if method.reads_modality else None
            if (hint, aligned) not in done:
                done[hint, aligned] = in_chunks(lambda b: method.embed(model, b, space, hint, aligned), x, batch_size,
                                                device).cpu()
            out[kind].append(done[hint, aligned])
        meta["label"] += task.test_y[task.probe].tolist()
        meta["task"] += [task.id] * len(task.probe)
        meta["modality"] += [task.modality] * len(task.probe)
        meta["sample"] += [f"{task.modality}:{int(i)}" for i in task.test_index[task.probe]]
    tensors = {k: torch.cat(v).contiguous() for k, v in out.items()}
    tensors["text"] = model.class_text.detach().cpu().contiguous()
    meta.update(class_names=list(stream.class_names), class_modality=list(stream.class_modality))
    return tensors, meta


# ---- drift between two snapshots of the same probe set ------------------------------------------------


def centroid_drift(before: np.ndarray, after: np.ndarray, groups: np.ndarray) -> dict:
    """Distance each group's centroid (class or modality) moved: {group: ||mean_after - mean_before||}."""
    return {g: float(np.linalg.norm(after[groups == g].mean(0) - before[groups == g].mean(0)))
            for g in dict.fromkeys(groups.tolist())}


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); 1 = same
    geometry up to rotation and isotropic scale."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    num = np.linalg.norm(Yc.T @ Xc) ** 2
    den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    return float(num / den) if den > 0 else float("nan")


def knn_overlap(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours (Euclidean, itself excluded) shared by the two snapshots
    (1 = unchanged)."""
    from sklearn.neighbors import NearestNeighbors  # here: the run's start-up never pays its import (0.4 s)

    k = min(k, len(X) - 1)
    a, b = (NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(return_distance=False) for Z in (X, Y))  # (N, k)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(X))]))


# ---- modality bias within one snapshot -----------------------------------------------------------------


def modality_gap(emb: np.ndarray, modality: np.ndarray, text: np.ndarray, class_modality: np.ndarray) -> dict:
    """Centroid distances: each modality to its own class texts ('to_text'), and between modalities."""
    cent = {m: emb[modality == m].mean(0) for m in dict.fromkeys(modality.tolist())}
    to_text = {m: float(np.linalg.norm(c - text[class_modality == m].mean(0))) for m, c in cent.items()}
    between = {f"{a}-{b}": float(np.linalg.norm(cent[a] - cent[b]))
               for i, a in enumerate(cent) for b in list(cent)[i + 1:]}
    return {"to_text": to_text, "between": between}


def alignment_uniformity(emb: np.ndarray, labels: np.ndarray, text: np.ndarray) -> tuple[float, float]:
    """Wang & Isola (2020): alignment = mean ||z - w_y||^2 to the own class text (lower is better);
    uniformity = log mean exp(-2 ||z_i - z_j||^2) over probe pairs (lower = more spread)."""
    align = float(np.mean(((emb - text[labels]) ** 2).sum(1)))
    d2 = torch.pdist(torch.from_numpy(emb).double()).pow(2)  # (N (N - 1) / 2,) as in Wang & Isola's code
    return align, float(d2.mul(-2).exp().mean().log())


def retrieval(emb: np.ndarray, labels: np.ndarray, text: np.ndarray, classes: np.ndarray) -> dict:
    """Recall@1 among classes, both ways (retrieval.both_ways): x->text accuracy and text->x (is the nearest
    probe of each class text one of its samples). Their difference is the retrieval asymmetry."""
    found = both_ways(torch.from_numpy(emb), torch.from_numpy(labels), torch.from_numpy(text), classes.tolist())
    x2t, t2x = found["x_to_text"]["R@1"], found["text_to_x"]["R@1"]
    return {"x_to_text": x2t, "text_to_x": t2x, "asymmetry": x2t - t2x}


def per_modality_accuracy(emb: np.ndarray, labels: np.ndarray, modality: np.ndarray, text: np.ndarray,
                          classes: np.ndarray) -> dict:
    """Probe accuracy of each modality when predicting among all given classes (modality-agnostic)."""
    pred = classes[(emb @ text[classes].T).argmax(1)]
    return {m: float(np.mean(pred[modality == m] == labels[modality == m])) for m in dict.fromkeys(modality.tolist())}


def realignment_effect(before: np.ndarray, after: np.ndarray, labels: np.ndarray, modality: np.ndarray,
                       text: np.ndarray, class_modality: np.ndarray) -> dict:
    """Modality gap to text and probe accuracy per modality, before vs after a re-alignment stage."""
    classes = np.unique(labels)
    out = {}
    for name, emb in (("before", before), ("after", after)):
        out[name] = {"gap_to_text": modality_gap(emb, modality, text, class_modality)["to_text"],
                     "accuracy": per_modality_accuracy(emb, labels, modality, text, classes)}
    return out
