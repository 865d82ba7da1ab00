import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmcl_lab.cli import main
from mmcl_lab.config import PRESETS, ConfigError, RunConfig, apply_overrides, from_yaml, load_config, to_yaml
from mmcl_lab.config import MethodConfig, ModalityConfig
from mmcl_lab.methods import create_method
from mmcl_lab.registry import ENCODERS, Registry


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_round_trips_through_yaml(preset, tmp_path):
    cfg = load_config(preset)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert from_yaml(path) == cfg


def test_overrides_parse_strings_to_field_types():
    cfg = load_config("ci", {"train.lr": "3e-4", "train.epochs": "4", "stream.modalities": "image,audio",
                             "stream.modality_id_at_test": "false", "method.name": "ewc", "method.params.lam": "2.5"})
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 4
    assert cfg.stream.modalities == ("image", "audio") and cfg.stream.modality_id_at_test is False
    assert cfg.method.params == {"lam": "2.5"}  # kept as given; the method's Config parses it (checked here already)
    with pytest.raises(ConfigError, match="method 'finetune' has no parameter.*'lam'"):
        load_config("ci", {"method.params.lam": "2.5"})  # the whole config is checked at once, method params too


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'.*epochs, batch_size, lr"):
        load_config("ci", {"train.lrr": 1})


@pytest.mark.parametrize("key,value", [("train.epochs", "many"), ("train.epochs", 2.5), ("train.lr", True),
                                       ("stream.modality_id_at_test", "perhaps"), ("seed", "x")])
def test_wrong_type_names_key_and_expected_type(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' expects"):
        load_config("ci", {key: value})


@pytest.mark.parametrize("key,value,match", [("stream.order", "sideways", "interleaved, blocked, random"),
                                             ("stream.modalities", "image,smell",
                                              r"unknown \['smell'\]; choose from audio, depth, image, (points, )?vid"),
                                             ("train.epochs", 0, "at least 1")])
def test_invalid_choice_lists_valid_choices(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config("ci", {key: value})


def test_unknown_method_and_encoder_list_choices():
    with pytest.raises(KeyError, match="unknown method 'nope'; available: chance, comm, er, ewc"):
        create_method(MethodConfig("nope"))
    with pytest.raises(KeyError, match="unknown encoder 'image/nope'; available: .*image/tiny"):
        ENCODERS.get("image/nope")


def test_unknown_method_param_lists_valid_params():
    with pytest.raises(ConfigError, match="has no parameter.*'lamb'.*valid: lam, decay"):
        create_method(MethodConfig("ewc", {"lamb": 1.0}))
    with pytest.raises(ConfigError, match="method.params.lam' expects float"):
        create_method(MethodConfig("ewc", {"lam": "lots"}))


def test_cli_reports_bad_config_without_traceback(capsys):
    assert main(["run", "--preset", "ci", "method.name=nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "finetune" in err and "Traceback" not in err
    assert main(["run", "--preset", "ci", "encoders.audio=audio/nope"]) == 2
    assert "audio/tiny" in capsys.readouterr().err


def test_registry_refuses_a_clash_and_replaces_a_redefinition():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(dict)

    def make():  # the same definition twice, as when a notebook cell runs again
        class Thing:
            pass
        return Thing

    first, second = make(), make()
    reg.register("b")(first)
    with pytest.warns(UserWarning, match="'b' redefined"):
        reg.register("b")(second)
    assert reg.get("b") is second


@given(lr=st.floats(1e-6, 1.0), epochs=st.integers(1, 50), seed=st.integers(0, 2**31 - 1),
       progress=st.booleans())
def test_overrides_round_trip_property(lr, epochs, seed, progress):
    cfg = apply_overrides(RunConfig(), {"train.lr": str(lr), "train.epochs": str(epochs), "seed": seed,
                                        "train.progress": str(progress)})
    assert (cfg.train.lr, cfg.train.epochs, cfg.seed, cfg.train.progress) == (lr, epochs, seed, progress)
    assert apply_overrides(cfg, {}) == cfg


@given(st.text(min_size=1, max_size=12).filter(lambda k: k.isidentifier()))
def test_any_unknown_key_is_rejected_property(key):
    if key in {"data", "modalities", "encoders", "templates", "stream", "model", "pretrain", "train", "method", "probe",
               "seed", "out_dir"}:
        return
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(RunConfig(), {key: "1"})


def test_a_config_yaml_of_the_per_section_layout_still_loads(tmp_path):
    # Before modalities were a mapping, each section had a field per modality; such files load unchanged.
    old = tmp_path / "config.yaml"
    old.write_text("data: {image: 'folder:/data/digits', n_per_class: 20}\n"
                   "encoders: {image: image/tiny, text: text/tiny}\n"
                   "templates: {image: 'a digit {}'}\n"
                   "pretrain: {image: corpus_characters, epochs: 3}\n"
                   "stream: {modalities: [image]}\n")
    cfg = from_yaml(old)
    expected = ModalityConfig("folder:/data/digits", "image/tiny", "corpus_characters", "a digit {}")
    assert cfg.modalities["image"] == expected
    assert cfg.data.n_per_class == 20 and cfg.pretrain.epochs == 3 and list(cfg.modalities) == ["image"]
    assert from_yaml(_write_yaml(tmp_path / "new.yaml", to_yaml(cfg))) == cfg  # and round-trips in the new layout
    with pytest.raises(ConfigError, match="modalities.smell: unknown modality 'smell'"):
        apply_overrides(cfg, {"templates.smell": "a smell of {}"})


def _write_yaml(path, text):
    path.write_text(text)
    return path
