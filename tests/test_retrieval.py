"""Retrieval metrics on hand-worked cases and against torchmetrics, and the probe measures rewritten on scikit-learn
and torch.pdist: every number as the hand-written code gave it."""

import numpy as np
import pandas as pd
import pytest
import torch

from mmcl_lab import probe, retrieval
from mmcl_lab.config import apply_overrides
from mmcl_lab.run import run_stream

from conftest import head


def test_recall_at_k_and_map_by_hand():
    # 3 queries over a gallery of 4; the relevant items' ranks are: query 0 -> 1; query 1 -> 3; query 2 -> 2 and 4
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                        [0.5, 0.8, 0.1, 0.7],
                        [0.4, 0.6, 0.3, 0.9]])
    relevant = torch.tensor([[1, 0, 0, 0],
                             [0, 0, 0, 1],
                             [1, 0, 1, 0]], dtype=torch.bool)
    # query 1: 0.8 (no), 0.7 (yes) -> rank 2, not 3: the similarities rank [1, 3, 0, 2]
    # query 2: 0.9 (no), 0.6 (no), 0.4 (yes), 0.3 (yes) -> ranks 3 and 4
    ap = [1.0, 1 / 2, (1 / 3 + 2 / 4) / 2]  # average precision of each query
    for shift in (0.0, -2.0):  # cosine similarities are often negative: the ranks, not the signs, count
        got = retrieval.scores(sim + shift, relevant, ks=(1, 2, 3))
        assert got["R@1"] == pytest.approx(1 / 3)
        assert got["R@2"] == pytest.approx(2 / 3)
        assert got["R@3"] == pytest.approx(1.0)
        assert got["mAP"] == pytest.approx(np.mean(ap))


def test_a_query_with_nothing_relevant_is_skipped_and_a_masked_pair_is_left_out():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    relevant = torch.tensor([[False, True], [False, False]])  # query 1 has nothing to find
    assert retrieval.scores(sim, relevant, ks=(1,)) == {"R@1": 0.0, "mAP": 0.5}
    mask = torch.tensor([[False, True], [True, True]])  # query 0 may not retrieve item 0 (say, itself)
    assert retrieval.scores(sim, relevant, ks=(1,), mask=mask) == {"R@1": 1.0, "mAP": 1.0}
    assert all(np.isnan(v) for v in retrieval.scores(sim, relevant & False, ks=(1,)).values())


def test_both_ways_on_perfect_and_on_swapped_embeddings():
    text = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1, 2])
    perfect = retrieval.both_ways(text[labels], labels, text, [0, 1, 2, 3])
    assert all(v == 1.0 for d in perfect.values() for v in d.values())
    assert perfect["text_to_x"].keys() == {"R@1", "R@5", "R@10", "mAP"}
    swapped = retrieval.both_ways(text[labels.flip(0)], labels, text, [0, 1, 2, 3])  # labels 2,1,1,0,0 embedded
    assert swapped["x_to_text"]["R@1"] == pytest.approx(1 / 5)  # only the middle sample sits on its own text


def test_any_to_any_matches_class_names_across_modalities():
    text = np.eye(3)
    names = ["cat", "dog", "cat"]  # class 2 (of the second modality) shares its name with class 0
    emb = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0],  # image: cat, cat, dog
                    [0, 0, 1], [0.6, 0.8, 0]])            # audio: cat (class 2), dog (class 1)
    labels = np.array([0, 0, 1, 2, 1])
    modality = np.array(["image"] * 3 + ["audio"] * 2)
    table = retrieval.any_to_any(emb, labels, modality, text, names, metric="R@1")
    assert list(table.index) == ["image", "audio", "text"] and list(table.columns) == list(table.index)
    assert table.loc["image", "image"] == 1.0  # each cat finds the other cat, never itself; the lone dog is skipped
    assert table.loc["image", "audio"] == pytest.approx(1 / 3)  # both cats land on audio's dog, the dog on its dog
    assert table.loc["image", "text"] == 1.0
    assert table.loc["text", "audio"] == pytest.approx(2 / 3)  # text 0 ("cat") is nearer audio's dog
    assert np.isnan(table.loc["audio", "audio"])  # one sample per class: nothing else to find


# ---- probe measures: the library rewrite gives the hand-written numbers -------------------------------------------


def _knn_overlap_by_hand(X, Y, k=10):
    def knn(Z):
        d = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    k = min(k, len(X) - 1)
    a, b = knn(X), knn(Y)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(X))]))


def _uniformity_by_hand(emb):
    d2 = ((emb[:, None] - emb[None]) ** 2).sum(-1)[np.triu_indices(len(emb), 1)]
    return float(np.log(np.mean(np.exp(-2 * d2))))


def _retrieval_by_hand(emb, labels, text, classes):
    sim = emb @ text[classes].T
    x2t = float(np.mean(classes[sim.argmax(1)] == labels))
    present = np.isin(classes, labels)
    t2x = float(np.mean(labels[sim[:, present].argmax(0)] == classes[present]))
    return x2t, t2x


@pytest.fixture(scope="module")
def snapshots(ci_cfg, ci_stream, ci_backbone, tmp_path_factory):
    """Probe snapshots of a real short COMM run: (embeddings per step, labels, texts)."""
    cfg = apply_overrides(ci_cfg, {"method.name": "comm"})
    run = run_stream(cfg, tmp_path_factory.mktemp("probe_run"), head(ci_stream, 3), backbone=ci_backbone)
    labels = np.array(run.probe_meta()["label"])
    return {s: t["known"].double().numpy() for s, t in run.probes().items()}, labels, run.probes()[2]["text"].double()


def test_probe_rewrite_leaves_every_number_unchanged(snapshots):
    snaps, labels, text = snapshots
    text = text.numpy()
    rng = np.random.default_rng(3)
    pairs = [(snaps[a], snaps[b]) for a, b in zip(sorted(snaps), sorted(snaps)[1:])]
    pairs.append((rng.normal(size=(80, 16)), rng.normal(size=(80, 16))))
    for a, b in pairs:
        for k in (1, 5, 10):
            assert probe.knn_overlap(a, b, k) == pytest.approx(_knn_overlap_by_hand(a, b, k), abs=1e-6)
    classes = np.unique(labels)
    for emb in snaps.values():
        assert probe.alignment_uniformity(emb, labels, text)[1] == pytest.approx(_uniformity_by_hand(emb), abs=1e-6)
        r = probe.retrieval(emb, labels, text, classes)
        assert (r["x_to_text"], r["text_to_x"]) == pytest.approx(_retrieval_by_hand(emb, labels, text, classes),
                                                                 abs=1e-6)


def test_a_run_reports_retrieval_after_every_task(ci_cfg, ci_stream, ci_backbone, tmp_path):
    stream = head(ci_stream, 3)
    run = run_stream(apply_overrides(ci_cfg, {"method.name": "finetune"}), tmp_path / "run", stream,
                     backbone=ci_backbone)
    table = run.retrieval()
    assert sorted(table.step.unique()) == [0, 1, 2]
    assert set(table.metric) == {"R@1", "R@5", "R@10", "mAP"} and set(table.direction) == {"x_to_text", "text_to_x"}
    assert table.value.between(0, 1).all()
    # x->text Recall@1 over the seen tasks of a modality is their sample-weighted accuracy
    res = run.results()
    acc = res[(res.step == 2) & (res.metric == "acc") & (res.setting == "known") & (res.task == 0)].value.item()
    r1 = table.query("step == 2 and modality == 'image' and setting == 'known' and direction == 'x_to_text' and "
                     "metric == 'R@1'").value.item()
    assert r1 == pytest.approx(acc, abs=1e-6)
    recall = table.query("step == 2 and setting == 'known' and direction == 'x_to_text'").pivot_table(
        index="modality", columns="metric", values="value")
    assert (recall["R@1"] <= recall["R@5"] + 1e-9).all() and (recall["R@5"] <= recall["R@10"] + 1e-9).all()
    assert isinstance(table, pd.DataFrame)


def test_scores_equal_torchmetrics_on_random_rankings():
    """The reference implementation, torchmetrics' retrieval classes (test-only), on random similarity matrices with
    several relevant items per query, negative similarities, a mask and queries with nothing to find."""
    tm = pytest.importorskip("torchmetrics.retrieval")
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        q, g = int(torch.randint(2, 30, (1,), generator=gen)), int(torch.randint(2, 40, (1,), generator=gen))
        sim = torch.randn(q, g, generator=gen, dtype=torch.float64)
        relevant = torch.rand(q, g, generator=gen) < 0.2
        mask = torch.rand(q, g, generator=gen) > 0.1 if trial % 2 else torch.ones(q, g, dtype=torch.bool)
        got = retrieval.scores(sim, relevant, ks=(1, 5, 10), mask=mask)
        index = torch.arange(q).unsqueeze(1).expand(q, g)[mask]
        preds, target = sim[mask].exp(), relevant[mask]
        if not target.any():
            continue
        for k in (1, 5, 10):
            want = float(tm.RetrievalHitRate(top_k=k, empty_target_action="skip")(preds, target, indexes=index))
            assert got[f"R@{k}"] == pytest.approx(want, abs=1e-6)  # torchmetrics gives float32
        want = float(tm.RetrievalMAP(empty_target_action="skip")(preds, target, indexes=index))
        assert got["mAP"] == pytest.approx(want, abs=1e-6)  # torchmetrics gives float32
