"""Retrieval through the shared text space, as multimodal papers report it: Recall@K both ways and mAP per modality
after every task, and an any-to-any matrix between modalities. Both metrics rank every query of a similarity matrix
at once, with one sort and one top-k: torchmetrics' retrieval classes give the same numbers (tests/test_retrieval.py
checks them against it) but rank each query in a Python loop, and importing torchmetrics costs seconds at every start.

Recall@K here is the retrieval hit rate of CLIP-style evaluation: the fraction of queries with at least one relevant
item among their K nearest. A sample's only relevant text is its class's; a class text's relevant samples are all of
that class's. mAP is the mean over queries of average precision (for a sample query, whose one relevant text sits at
rank r, that is 1/r).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

KS = (1, 5, 10)  # the Recall@K cut-offs reported
TEXT = "text"  # the class texts, as a row and column of the any-to-any matrix
DIRECTIONS = {"x_to_text": "x→text", "text_to_x": "text→x"}  # as the tables head them


def scores(sim: Tensor, relevant: Tensor, ks: Sequence[int] = KS, mask: Tensor | None = None) -> dict[str, float]:
    """Recall@K for each K and mAP of the queries in the rows of sim (Q, G) against the gallery in its columns;
    relevant (Q, G) is bool, mask (Q, G) leaves pairs out (a query itself, within one modality). A query with
    nothing relevant in its gallery is skipped; NaN when every query is."""
    keep = torch.ones_like(relevant) if mask is None else mask
    relevant = relevant & keep
    names = [f"R@{k}" for k in ks] + ["mAP"]
    queries = relevant.any(1)  # (Q,) the queries with something to find
    if not queries.any():
        return dict.fromkeys(names, float("nan"))
    sim = sim.double()
    sim = sim.masked_fill(~keep, sim.min().item() - 1.0)[queries]  # (Q', G): a left-out pair ranks below the rest
    relevant = relevant[queries]  # (Q', G)
    out = {}
    for k in ks:  # a hit: something relevant among the query's k highest similarities
        top = sim.topk(min(k, sim.shape[1]), dim=1).indices  # (Q', k)
        out[f"R@{k}"] = relevant.gather(1, top).any(1).double().mean().item()
    # average precision of a query: the mean, over its relevant items, of the precision at each one's rank
    hits = relevant.gather(1, sim.argsort(dim=1, descending=True, stable=True)).double()  # (Q', G) in rank order
    precision = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, device=hits.device)  # (Q', G)
    out["mAP"] = ((precision * hits).sum(1) / hits.sum(1)).mean().item()
    return out


def both_ways(z: Tensor, labels: Tensor, text: Tensor, classes: Sequence[int]) -> dict[str, dict[str, float]]:
    """Samples z (N, E) of labels (N,) against the texts (C_all, E) of classes: {"x_to_text": scores of each sample
    retrieving its class text among classes, "text_to_x": scores of each class text (of the classes present)
    retrieving its samples}."""
    classes_t = torch.as_tensor(list(classes), device=z.device)
    sim = z @ text[classes_t].T  # (N, C) cosine similarities (unit vectors)
    relevant = labels.unsqueeze(1) == classes_t.unsqueeze(0)  # (N, C)
    present = relevant.any(0)  # (C,) classes with a sample to retrieve
    return {"x_to_text": scores(sim, relevant), "text_to_x": scores(sim.T[present], relevant.T[present])}


def any_to_any(emb: np.ndarray, labels: np.ndarray, modality: np.ndarray, text: np.ndarray,
               class_names: Sequence[str], metric: str = "mAP") -> pd.DataFrame:
    """Retrieval between every pair of modalities and the class texts, in the shared space: row = the queries'
    modality, column = the gallery's; an item is relevant to a query when their class names are equal. Within one
    modality a query never retrieves itself. NaN where the two share no class name (the bundled benchmark's
    modalities have disjoint vocabularies, so there only the text row and column and the diagonal are defined)."""
    names = np.asarray(class_names)
    items = {m: (emb[modality == m], names[labels[modality == m]]) for m in dict.fromkeys(modality.tolist())}
    items[TEXT] = (text, names)
    out = pd.DataFrame(index=list(items), columns=list(items), dtype=float)
    for q, (zq, nq) in items.items():
        for g, (zg, ng) in items.items():
            relevant = torch.from_numpy(nq[:, None] == ng[None, :])  # (Q, G)
            mask = ~torch.eye(len(nq), dtype=torch.bool) if q == g else None
            if not (relevant if mask is None else relevant & mask).any():
                continue
            sim = torch.from_numpy(zq @ zg.T)  # (Q, G)
            out.loc[q, g] = scores(sim, relevant, mask=mask)[metric]
    return out


def wide(rows: pd.DataFrame, index: list[str],
         metrics: Sequence[str] = (*(f"R@{k}" for k in KS), "mAP")) -> pd.DataFrame:
    """Retrieval rows (one per direction and metric, as in retrieval.csv) as a table with one column per
    direction and metric ("x→text R@1", ...), indexed by index."""
    table = rows.pivot_table(index=index, columns=["direction", "metric"], values="value", sort=False)
    keep = [(d, m) for d in DIRECTIONS for m in metrics if (d, m) in table.columns]
    table = table[keep]
    table.columns = [f"{DIRECTIONS[d]} {m}" for d, m in keep]
    return table
