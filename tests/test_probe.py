import numpy as np
import pytest
from scipy.stats import ortho_group

from mmcl_lab import probe

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 8))
LABELS = np.repeat(np.arange(6), 10)
MODALITY = np.array(["image"] * 30 + ["audio"] * 30)


def test_identical_snapshots_do_not_drift():
    assert all(d == 0 for d in probe.centroid_drift(X, X, LABELS).values())
    assert probe.linear_cka(X, X) == pytest.approx(1.0)
    assert probe.knn_overlap(X, X) == pytest.approx(1.0)


def test_rotation_and_scale_keep_cka_and_neighbours():
    Q = ortho_group.rvs(8, random_state=1)
    Y = 3.0 * X @ Q
    assert probe.linear_cka(X, Y) == pytest.approx(1.0)
    assert probe.knn_overlap(X, Y) == pytest.approx(1.0)
    assert max(probe.centroid_drift(X, Y, MODALITY).values()) > 0


def test_a_shift_moves_centroids_by_its_length():
    shift = np.zeros(8)
    shift[0] = 2.0
    drift = probe.centroid_drift(X, X + shift, MODALITY)
    assert drift == pytest.approx({"image": 2.0, "audio": 2.0})


def test_unrelated_snapshots_have_low_cka():
    assert probe.linear_cka(X, rng.normal(size=X.shape)) < 0.5


def test_modality_gap_is_zero_when_modalities_sit_on_their_texts():
    text = rng.normal(size=(6, 8))
    class_modality = np.array(["image"] * 3 + ["audio"] * 3)
    emb = text[LABELS]
    gap = probe.modality_gap(emb, MODALITY, text, class_modality)
    assert gap["to_text"] == pytest.approx({"image": 0.0, "audio": 0.0})
    assert gap["between"]["image-audio"] > 0


def test_perfect_embeddings_retrieve_both_ways():
    text = np.eye(8)[:6]
    emb = text[LABELS]
    r = probe.retrieval(emb, LABELS, text, np.arange(6))
    assert r == {"x_to_text": 1.0, "text_to_x": 1.0, "asymmetry": 0.0}
    align, uniform = probe.alignment_uniformity(emb, LABELS, text)
    assert align == pytest.approx(0.0) and uniform < 0


def test_realignment_effect_reports_before_and_after():
    text = np.eye(8)[:6]
    cm = np.array(["image"] * 3 + ["audio"] * 3)
    after = text[LABELS]
    before = after + 0.8 * rng.normal(size=after.shape)
    eff = probe.realignment_effect(before, after, LABELS, MODALITY, text, cm)
    assert eff["after"]["accuracy"] == {"image": 1.0, "audio": 1.0}
    assert all(eff["before"]["gap_to_text"][m] > eff["after"]["gap_to_text"][m] for m in ("image", "audio"))


@pytest.mark.parametrize("name", ["finetune", "comm"])
def test_evaluation_and_probes_reuse_embeddings_without_changing_them(name, ci_cfg, ci_stream, ci_backbone,
                                                                      monkeypatch):
    """A method blind to the modality hint is embedded once for both settings, and the probes take evaluate's
    embeddings: the same rows and tensors as embedding every setting and every probe afresh."""
    import torch

    from mmcl_lab.config import apply_overrides
    from mmcl_lab.evaluate import evaluate
    from mmcl_lab.methods import Context, Method, create_method

    method = create_method(apply_overrides(ci_cfg, {"method.name": name}).method)
    model = ci_backbone.model(ci_stream).eval()
    method.setup(model, Context.replay(ci_stream, upto=1, backbone=ci_backbone))
    for task in ci_stream.tasks[:2]:
        method.before_task(model, task)
        method.after_task(model, task)
    assert method.reads_modality == (name == "comm")
    embedded = {}
    rows = evaluate(model, method, ci_stream, 1, "cpu", 16, embedded)
    reused, _ = probe.capture(model, method, ci_stream, "cpu", 16, embedded)
    monkeypatch.setattr(Method, "reads_modality", property(lambda self: True))  # every setting on its own
    assert rows == evaluate(model, method, ci_stream, 1, "cpu", 16)
    fresh, _ = probe.capture(model, method, ci_stream, "cpu", 16)
    for kind in fresh:
        assert torch.allclose(reused[kind], fresh[kind], atol=1e-6), kind
