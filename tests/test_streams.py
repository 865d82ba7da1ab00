import numpy as np
import pytest

from mmcl_lab.config import apply_overrides
from mmcl_lab.streams import build_stream


def test_classes_are_disjoint_named_and_cover_every_modality(ci_stream):
    seen = [c for t in ci_stream for c in t.classes]
    assert len(seen) == len(set(seen)) == len(ci_stream.class_names)
    assert all(name.strip() for name in ci_stream.class_names)
    assert set(ci_stream.modalities) == {"image", "audio", "depth", "video"}
    for task in ci_stream:
        assert set(task.train_y.tolist()) == set(task.classes) == set(task.test_y.tolist())
        assert all(ci_stream.class_modality[c] == task.modality for c in task.classes)
        assert len(task.probe) > 0 and task.probe.max() < len(task.test_y)


def test_interleaved_order_and_task_ids(ci_stream):
    assert [t.id for t in ci_stream] == list(range(len(ci_stream)))
    assert [t.modality for t in ci_stream][:4] == ["image", "audio", "depth", "video"]


def test_class_text_is_unit_norm(ci_stream):
    norms = ci_stream.class_text.norm(dim=1)
    assert np.allclose(norms.numpy(), 1.0, atol=1e-5)


def test_blocked_and_random_orders(ci_cfg, ci_stream):
    blocked = build_stream(apply_overrides(ci_cfg, {"stream.order": "blocked"}))
    assert [t.modality for t in blocked][:2] == ["image", "image"]
    r1 = build_stream(apply_overrides(ci_cfg, {"stream.order": "random", "seed": 3}))
    r2 = build_stream(apply_overrides(ci_cfg, {"stream.order": "random", "seed": 3}))
    r3 = build_stream(apply_overrides(ci_cfg, {"stream.order": "random", "seed": 4}))
    order = lambda s: [(t.modality, t.class_names) for t in s]  # noqa: E731
    assert order(r1) == order(r2)
    assert order(r1) != order(r3) and order(r1) != order(ci_stream)
    assert sorted(order(r1)) == sorted(order(ci_stream))


def test_too_many_tasks_per_modality_is_refused(ci_cfg):
    with pytest.raises(ValueError, match="tasks_per_modality=20 but image data has only 10 classes"):
        build_stream(apply_overrides(ci_cfg, {"stream.tasks_per_modality": 20}))
