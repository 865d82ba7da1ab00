"""Typed run configuration: frozen dataclasses, named presets, dotted overrides and a YAML round-trip."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

MODALITIES = ("image", "video", "audio", "depth")
STREAM_ORDERS = ("interleaved", "blocked", "random")


@dataclass(frozen=True)
class DataConfig:
    """Which registered dataset feeds each modality, and how much of it."""

    image: str = "mnist"  # a registered dataset name, or "folder:<root>" for your own files
    video: str = "moving_digits"
    audio: str = "spoken_words"
    depth: str = "shapes"
    n_per_class: int = 150  # samples generated (or read, at most) per class, train + test
    test_fraction: float = 0.3
    val_fraction: float = 0.2  # of each class's training part, held out for tuning (stream.evaluate_on=val)
    seed: int = 0  # data generation seed, independent of the training seed
    vary_split: bool = False  # True: the train/val/test split follows the run seed instead of data.seed
    cache_dir: str = ""  # "" -> $MMCL_CACHE or ~/.cache/mmcl_lab


@dataclass(frozen=True)
class EncoderConfig:
    """Frozen encoder per modality ("name" or "name@path-or-hub-id") and the text anchor."""

    image: str = "image/efficientnet_lite0"
    video: str = "video/efficientnet_lite0"
    audio: str = "audio/efficientnet_lite0"
    depth: str = "depth/efficientnet_lite0"
    text: str = "text/minilm"
    batch_size: int = 64  # extraction batch size


@dataclass(frozen=True)
class TemplateConfig:
    """Prompt template per modality that turns a class name into the text it is aligned to."""

    image: str = "a photo of the handwritten character {}"
    video: str = "a video of a digit {}"
    audio: str = "the sound of someone saying the word {}"
    depth: str = "a depth map of a {}"


@dataclass(frozen=True)
class StreamConfig:
    """How classes are cut into tasks and what is known at test time."""

    modalities: tuple[str, ...] = ("image", "audio", "depth", "video")
    tasks_per_modality: int = 2
    order: str = "interleaved"  # interleaved | blocked | random (seeded by RunConfig.seed)
    modality_id_at_test: bool = True  # False: only modality-agnostic evaluation is allowed
    evaluate_on: str = "test"  # test | val: tuning runs score on validation data and never load the test data


@dataclass(frozen=True)
class ModelConfig:
    """The binding model on top of frozen encoder features (pretrained, then frozen or fine-tuned)."""

    dim: int = 128  # width of the transformer
    heads: int = 4
    layers: int = 4
    temperature: float = 0.05  # initial temperature of the cosine logits; learned in pretraining (COMM.md 1)


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining corpus (generated, disjoint from the stream) and the contrastive pretraining run."""

    image: str = "corpus_characters"  # a registered corpus dataset per modality
    video: str = "corpus_motions"
    audio: str = "corpus_words"
    depth: str = "corpus_shapes"
    n_per_class: int = 40
    shift: float = 1.0  # how far the corpus's conditions move from the stream's (data/corpus.py)
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0  # corpus generation and initialisation: the same seed gives the same weights


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation budget, identical for every method."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    progress: bool = True


@dataclass(frozen=True)
class MethodConfig:
    """A registered method name and its hyper-parameters (validated by the method's own Config)."""

    name: str = "finetune"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeConfig:
    """The fixed probe set embedded after every task."""

    per_class: int = 6  # test samples per class kept as probes
    projection: str = "umap"  # umap | pca, for the drift explorer


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; written to the run directory as config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    templates: TemplateConfig = field(default_factory=TemplateConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    out_dir: str = "runs/default"


class ConfigError(ValueError):
    """A configuration key or value that is not valid."""


def _ci() -> RunConfig:
    tiny = {f"encoders.{m}": f"{m}/tiny" for m in MODALITIES}
    # Bare class names: the tiny bag-of-words text encoder would drown them in the shared template words.
    bare = {f"templates.{m}": "{}" for m in MODALITIES}
    return apply_overrides(RunConfig(), {
        **tiny, **bare, "encoders.text": "text/tiny", "data.n_per_class": 30, "train.epochs": 10,
        "train.batch_size": 32, "train.progress": False, "model.dim": 32, "probe.per_class": 3,
        "pretrain.n_per_class": 10, "pretrain.epochs": 20,
        "probe.projection": "pca", "out_dir": "runs/ci",
    })


def _paper() -> RunConfig:
    return apply_overrides(RunConfig(), {
        "data.n_per_class": 300, "train.epochs": 10, "stream.order": "random", "out_dir": "runs/paper",
    })


# Expected wall time on 2 CPU cores: ci ~10 s; default ~1-2 min to generate and encode once, then
# seconds per run; paper ~2x default. Presets are functions so that every call returns a fresh object.
PRESETS: dict[str, typing.Callable[[], RunConfig]] = {"ci": _ci, "default": RunConfig, "paper": _paper}


def load_config(preset_or_path: str = "default", overrides: dict[str, Any] | None = None,
                tuned: bool = False) -> RunConfig:
    """A preset name or a config.yaml path, with dotted overrides applied ({"train.lr": 3e-4}). tuned=True
    starts from the method's shipped validation-tuned settings (mmcl_lab/tuned.yaml); overrides still win."""
    if preset_or_path in PRESETS:
        cfg = PRESETS[preset_or_path]()
    elif Path(preset_or_path).is_file():
        cfg = from_yaml(Path(preset_or_path))
    else:
        raise ConfigError(
            f"unknown preset or missing file {preset_or_path!r}; presets: {', '.join(PRESETS)}")
    overrides = dict(overrides or {})
    if tuned:
        from .tune import tuned_overrides
        overrides = {**tuned_overrides(str(overrides.get("method.name", cfg.method.name))), **overrides}
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply {"section.key": value} pairs; strings are parsed to the field's type."""
    for key, value in overrides.items():
        cfg = _set(cfg, key.split("."), value, key)
    check_config(cfg)
    return cfg


def _set(node: Any, path: list[str], value: Any, full_key: str) -> Any:
    if isinstance(node, dict):  # free-form method params: the method's Config parses and checks them
        if len(path) != 1:
            raise ConfigError(f"config key {full_key!r} is nested too deeply")
        return {**node, path[0]: value}
    names = [f.name for f in fields(node)]
    if path[0] not in names:
        raise ConfigError(f"unknown config key {full_key!r}; valid keys here: {', '.join(names)}")
    current = getattr(node, path[0])
    if len(path) > 1:
        if not (is_dataclass(current) or isinstance(current, dict)):
            raise ConfigError(f"config key {full_key!r}: {path[0]!r} has no sub-keys")
        return replace(node, **{path[0]: _set(current, path[1:], value, full_key)})
    hint = typing.get_type_hints(type(node))[path[0]]
    return replace(node, **{path[0]: coerce(value, hint, full_key)})


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = typing.get_args(hint)[0]
            return tuple(coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in items)
        if hint is dict or origin is dict:
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise TypeError
            return dict(parsed)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise TypeError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {key!r} expects {name}, got {value!r}")


def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (tuples become lists) for YAML and JSON."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(cfg))))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def to_yaml(cfg: RunConfig) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict, cls: type = RunConfig, prefix: str = "") -> Any:
    """Rebuild a config from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = from_dict(value, hint, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, prefix + name)
    return cls(**kwargs)


def from_yaml(path: Path) -> RunConfig:
    """Read a config.yaml written by to_yaml."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a config.yaml") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    cfg = from_dict(data or {})
    check_config(cfg)
    return cfg


from .validate import check_config  # noqa: E402  (validate.py reads this module's names)
