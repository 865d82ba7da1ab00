import numpy as np
import pandas as pd
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


def test_class_texts_are_templated_names_embedded_as_unit_vectors(ci_cfg, ci_stream, ci_backbone):
    assert ci_stream.class_prompts == tuple(ci_cfg.modalities[m].template.format(n)
                                            for n, m in zip(ci_stream.class_names, ci_stream.class_modality))
    norms = ci_backbone.model(ci_stream).class_text.norm(dim=1)
    assert len(norms) == len(ci_stream.class_names) and np.allclose(norms.numpy(), 1.0, atol=1e-5)


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


def test_validation_is_carved_from_training_data_and_tuning_never_sees_test_data(ci_cfg, ci_stream):
    val = build_stream(apply_overrides(ci_cfg, {"stream.evaluate_on": "val"}))
    for final, tuning in zip(ci_stream, val):
        train, test, held_out = set(final.train_index), set(final.test_index), set(tuning.test_index)
        assert np.array_equal(final.train_index, tuning.train_index)  # the same fit part either way
        assert not held_out & train and not held_out & test  # validation: neither fitted nor test
        assert set(tuning.test_y.tolist()) == set(final.classes)  # stratified: every class validated
    moved = build_stream(apply_overrides(ci_cfg, {"data.vary_split": True, "seed": 5}))
    assert not np.array_equal(moved[0].test_index, ci_stream[0].test_index)  # the split follows the run seed


def test_tuning_writes_the_best_validation_configuration(ci_cfg, tmp_path):
    import yaml

    from mmcl_lab.tune import space_of, tune

    table = tune(ci_cfg, ["finetune"], trials=3, out_dir=tmp_path, seeds=(0, 1), rounds=0)
    assert len(table) == 3 and {"train.lr", "train.epochs", "val_avg_acc", "seed_0", "seed_1"} <= set(table.columns)
    first = table.iloc[0]  # the preset's own settings are tried first
    assert first["train.lr"] == ci_cfg.train.lr and first["train.epochs"] == ci_cfg.train.epochs
    done = table[table.state == "complete"]
    assert np.allclose(done.val_avg_acc, done[["seed_0", "seed_1"]].mean(axis=1))  # the mean over the tuning seeds
    chosen = yaml.safe_load((tmp_path / "tuned.yaml").read_text())["finetune"]
    winner = done.loc[done.val_avg_acc.idxmax()]
    assert chosen == {"train.epochs": int(winner["train.epochs"]), "train.lr": winner["train.lr"]}
    assert all(space_of("finetune")[k].low <= v <= space_of("finetune")[k].high for k, v in chosen.items())
    curve = pd.read_csv(tmp_path / "curves.csv")
    assert curve.best_so_far.is_monotonic_increasing and curve.best_so_far.iloc[-1] == done.val_avg_acc.max()
    # the pruner sees the second half of each seed's tasks only, and the running estimate ends at the final score
    import optuna

    tasks = len(build_stream(ci_cfg))
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.log")))
    (study,) = optuna.get_all_study_summaries(storage)
    for trial in optuna.load_study(study_name=study.study_name, storage=storage).trials:
        steps = sorted(trial.intermediate_values)
        assert steps and all(step % tasks >= tasks // 2 for step in steps)
        assert trial.intermediate_values[steps[-1]] == pytest.approx(trial.value)
    # a second call resumes: every configuration is read from the journal, none is trained again
    again = tune(ci_cfg, ["finetune"], trials=3, out_dir=tmp_path, seeds=(0, 1), rounds=0)
    assert again.val_avg_acc.tolist() == table.val_avg_acc.tolist()


def test_a_winner_at_the_edge_of_its_range_widens_it():
    from mmcl_lab.tune import Range

    lr = Range(1e-4, 1e-2, floor=1e-7)
    assert lr.at_edge(1.1e-4) == "low" and lr.at_edge(9e-3) == "high" and lr.at_edge(1e-3) is None
    assert lr.widened("low") == Range(1e-5, 1e-2, floor=1e-7) and lr.widened("high").high == 1e-1
    ratio = Range(1e-4, 1.0, floor=1e-6, ceiling=1.0)
    assert ratio.at_edge(0.95) is None  # at its hard ceiling: there is nothing to widen
    assert ratio.widened("low").low == 1e-5 and Range(1e-5, 1.0, floor=1e-5).at_edge(1e-5) is None
    epochs = Range(2, 10, log=False, integer=True, floor=1)
    assert epochs.at_edge(10) == "high" and epochs.widened("high").high == 18 and epochs.widened("low").low == 1


def _sources(stream, modality: str, part: str) -> set[str]:
    """The MNIST images inside the samples of modality's tasks in part ("train" or "test")."""
    raw = stream.raw[modality]
    rows = np.concatenate([getattr(t, f"{part}_index") for t in stream if t.modality == modality])
    return set(raw.sources[rows])


@pytest.mark.parametrize("split_seed", [0, 1, 2])
def test_no_test_sample_of_one_modality_is_inside_a_training_sample_of_another(ci_cfg, split_seed):
    """Images and moving-digit clips are both made of MNIST digits: an image test sample must not appear inside a video
    training clip (nor a clip's digit among the training images), for any split."""
    stream = build_stream(apply_overrides(ci_cfg, {"data.vary_split": True, "seed": split_seed}))
    with_sources = [m for m in stream.modalities if stream.raw[m].sources is not None]
    assert {"image", "video"} <= set(with_sources)
    for test_m in with_sources:
        for train_m in with_sources:
            if test_m != train_m:
                assert not _sources(stream, test_m, "test") & _sources(stream, train_m, "train"), (test_m, train_m)


def test_the_default_images_and_clips_draw_on_disjoint_digits():
    from mmcl_lab.data.mnist import mnist, moving_digits

    images, clips = mnist(150, 0), moving_digits(150, 0)  # the default preset's sizes
    assert not set(images.sources) & set(clips.sources)
    assert len(set(clips.sources)) == len(clips.y)  # enough digits that no clip shares its digit with another


def test_a_pruned_configuration_is_neither_a_score_nor_the_best_so_far():
    """Optuna gives a pruned trial its last running value (an accuracy after an early task, often higher than any
    final score): the table and the best-so-far curve must not count it."""
    import optuna

    from mmcl_lab.tune import _curve, _rows

    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    trials = [optuna.trial.create_trial(state=state, value=value, params={"x": 0.5}, distributions=dist,
                                        intermediate_values={0: 0.95}) for state, value in
              [(optuna.trial.TrialState.COMPLETE, 0.80), (optuna.trial.TrialState.PRUNED, 0.95),
               (optuna.trial.TrialState.COMPLETE, 0.85)]]
    for number, trial in enumerate(trials):
        trial.number = number
    assert [r["val_avg_acc"] for r in _rows("m", trials)] == [0.80, None, 0.85]
    assert [r["pruned_at_step"] for r in _rows("m", trials)] == [None, 0, None]
    assert [c["best_so_far"] for c in _curve("m", trials)] == [0.80, 0.80, 0.85]
