"""Typed run configuration: frozen dataclasses, named presets, dotted overrides, a YAML round-trip, and the one
check of a whole config (types, ranges, choices, registered names, method parameters).

This module imports only the registries: the plug-in packages fill them when `mmcl_lab` is imported, and the
check reads them. What this machine can run (folders and weights that exist, a device that is there) is the
run's preflight (run.py), not the config's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import string
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .registry import BACKBONES, DATASETS, ENCODERS, METHODS, MODALITIES

STREAM_ORDERS = ("interleaved", "blocked", "random")
CLASS_ORDERS = ("listed", "seeded")
# One training, one validation and one test sample per class at the least: the split needs all three.
MIN_PER_CLASS = 3
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # train.precision (utils.compute_dtype)
TUNED_FILE = Path(__file__).with_name("tuned.yaml")


class ConfigError(ValueError):
    """A configuration key or value that is not valid."""


@dataclass(frozen=True)
class ModalityConfig:
    """One modality of the run: where its data come from, how they are encoded and templated, and which
    dataset pretrains the backbone on it. Every field starts from the modality's registered default."""

    data: str  # a registered dataset name, or "<reader>:<path>" (folder:, esc50:, ucf101:, ...) for files
    encoder: str  # a registered encoder: "name" or "name@path-or-hub-id"
    corpus: str  # a registered pretraining-corpus dataset
    template: str = ""  # the text a class name is aligned to ("{}" is the name); "": the dataset's own
    # Explicit tasks, as published protocols fix them: one entry per task, its class names joined by "|"
    # (CLI: modalities.audio.task_classes="dog|rooster,rain|sea waves"). Empty: stream.class_order cuts the
    # dataset's classes into stream.tasks_per_modality tasks.
    task_classes: tuple[str, ...] = ()


def modality_defaults(name: str, key: str = "stream.modalities") -> ModalityConfig:
    """The registered defaults of modality name, or a ConfigError naming key."""
    if name not in MODALITIES:
        raise ConfigError(f"{key}: unknown modality {name!r}; registered: {', '.join(MODALITIES.names())}")
    m = MODALITIES.get(name)
    return ModalityConfig(m.data, m.encoder, m.corpus)


@dataclass(frozen=True)
class DataConfig:
    """How much of each modality's dataset is used, and how it is split."""

    n_per_class: int = 150  # samples generated (or read, at most) per class, train + test
    test_fraction: float = 0.3
    val_fraction: float = 0.2  # of each class's training part, held out for tuning (stream.evaluate_on=val)
    seed: int = 0  # data generation seed, independent of the training seed
    vary_split: bool = False  # True: the train/val/test split follows the run seed instead of data.seed
    cache_dir: str = ""  # "" -> $MMCL_CACHE or ~/.cache/mmcl_lab


@dataclass(frozen=True)
class EncoderConfig:
    """The text anchor and how features are extracted and cached (each modality's encoder is in
    modalities.<name>)."""

    text: str = "text/minilm"
    batch_size: int = 64  # extraction batch size
    workers: int = 2  # DataLoader processes decoding a reader's files during extraction (0: in the main process)
    shard_rows: int = 1024  # samples per feature-cache shard (rounded up to whole batches); resume is per shard
    in_memory_mb: int = 2048  # a feature set up to this size (float32) is held in memory; larger stays in shards


@dataclass(frozen=True)
class StreamConfig:
    """How classes are cut into tasks and what is known at test time."""

    modalities: tuple[str, ...] = ("image", "audio", "depth", "video")
    tasks_per_modality: int = 2
    order: str = "interleaved"  # interleaved | blocked | random (seeded by RunConfig.seed)
    # How a modality's classes are cut into tasks: "listed" (the dataset's order: sorted names, or its official
    # class index) or "seeded" (a permutation by data.seed, as class-incremental protocols draw it).
    # modalities.<m>.task_classes, where given, fixes the tasks instead.
    class_order: str = "listed"
    modality_id_at_test: bool = True  # False: only modality-agnostic evaluation is allowed
    evaluate_on: str = "test"  # test | val: tuning runs score on validation data and never load the test data


@dataclass(frozen=True)
class ModelConfig:
    """The backbone (a registered name, built by the factory in backbones/) and its size."""

    backbone: str = "binding"  # the pretrained binding transformer on frozen encoder features; "towers": the real
    # model itself (CLIP, CLAP, a binding model: the modalities' encoders), with no bundled head (docs/REAL_MODELS.md)
    dim: int = 128  # width of the transformer
    heads: int = 4
    layers: int = 4
    temperature: float = 0.05  # initial temperature of the cosine logits; learned in pretraining (COMM.md 1)
    # One input adapter for every modality whose encoder is the same network (feature spaces "<modality>/<net>"
    # become "<net>"), so that an input's format no longer tells its modality (RESULTS.md, "One shared tower").
    shared_tower: bool = False
    # backbone=towers: the top layers of each real tower that the model runs, with prompt hooks (VPT-deep/prefix);
    # features are cached below the first of them. 0 = cache the projected embeddings (no prompts inside).
    prompt_depth: int = 4

    @property
    def tower_cut(self) -> int:
        """Layers a real tower leaves above its cached features: prompt_depth under the towers backbone; 0 under the
        bundled head, which reads the towers' projected embeddings."""
        return self.prompt_depth if self.backbone == "towers" else 0


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining corpus (generated, disjoint from the stream; its dataset per modality is in
    modalities.<name>.corpus) and the contrastive pretraining run."""

    n_per_class: int = 40
    shift: float = 1.0  # how far the corpus's conditions move from the stream's (data/corpus.py)
    epochs: int = 15  # at most; early stopping (patience) ends it sooner
    # Early stopping: this share of each corpus class is held out, and pretraining stops once the held-out samples'
    # zero-shot accuracy over the vocabulary has not improved for `patience` epochs, keeping the best epoch's
    # weights. 0 (the default): every epoch, on the whole corpus -- on the default corpus the held-out accuracy was
    # still rising at epoch 15, so stopping bought no time there (docs/BENCHMARKS.md, "Pretraining the backbone").
    patience: int = 0
    val_fraction: float = 0.1
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0  # corpus generation, initialisation and batch order: the same seed gives the same weights
    # False: the corpus leaves out every class name of the stream's datasets, with its samples, so that the backbone
    # has never seen a class name it is later tested on (the vocabulary ablation in docs/RESULTS.md)
    stream_classes: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation budget, identical for every method, and the device every stage of the run uses."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    progress: bool = True
    tensorboard: bool = False  # also write the training log as TensorBoard events, <run>/tensorboard (extra)
    # auto | fp32 | bf16 | fp16; auto: bf16 on a GPU that has it, fp16 (with loss scaling) on one that does not,
    # fp32 on the CPU
    precision: str = "auto"
    # on CUDA, deterministic kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG), which byte-exact
    # resume needs; the CPU path is deterministic without them
    deterministic: bool = True
    # evaluation, statistics fits, relevance and probe passes embed at most this many samples at once
    eval_batch_size: int = 1024


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


def _default_modalities() -> dict[str, ModalityConfig]:
    return {m: modality_defaults(m) for m in StreamConfig().modalities}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; written to the run directory as config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    modalities: dict[str, ModalityConfig] = field(default_factory=_default_modalities)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    out_dir: str = "runs/default"


def _ci() -> RunConfig:
    # Tiny random encoders, and bare class names: the tiny bag-of-words text encoder would drown them in the
    # shared template words.
    tiny = {key: value for m in StreamConfig().modalities
            for key, value in ((f"modalities.{m}.encoder", f"{m}/tiny"), (f"modalities.{m}.template", "{}"))}
    return apply_overrides(RunConfig(), {
        **tiny, "encoders.text": "text/tiny", "data.n_per_class": 30, "train.epochs": 10,
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
        overrides = {**tuned_overrides(str(overrides.get("method.name", cfg.method.name))), **overrides}
    return apply_overrides(cfg, overrides)


def tuned_overrides(method: str, path: Path = TUNED_FILE) -> dict[str, Any]:
    """The validation-tuned settings of method that `mmcl-lab tune` wrote to path (the shipped tuned.yaml); a
    method that never trains has none. A missing file, or a training method missing from it, is an error: a
    "tuned" run must never quietly run untuned."""
    if not path.is_file():
        raise ConfigError(f"{path}: no tuned settings to start from; run `mmcl-lab tune` or drop --tuned")
    table = read_yaml(path)
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{path}: expected a mapping of method name -> {{dotted key: value}}")
    if method not in table and method in METHODS and getattr(METHODS.get(method), "trains", True):
        raise ConfigError(f"{path}: no tuned settings for method {method!r} (tuned: {', '.join(sorted(table))}); "
                          "tune it or drop --tuned")
    return dict(table.get(method, {}))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated within one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file, parsed safely with duplicate keys refused; every failure is a ConfigError naming the file."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected YAML") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


# Before modalities were a mapping, each section had one field per modality: data.image, encoders.image,
# templates.image, pretrain.image. Those keys (in overrides and in older config.yaml files) still work.
LEGACY = {"data": "data", "encoders": "encoder", "templates": "template", "pretrain": "corpus"}


def _modern(path: list[str]) -> list[str]:
    """modalities.<m>.<field> for a legacy per-modality key, else path unchanged."""
    if len(path) == 2 and path[0] in LEGACY:
        section = typing.get_type_hints(RunConfig).get(path[0])  # None: templates, a section no more
        if path[1] not in ([f.name for f in fields(section)] if section else []):
            return ["modalities", path[1], LEGACY[path[0]]]
    return path


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply {"section.key": value} pairs (strings are parsed to the field's type), then check the whole config."""
    for key, value in overrides.items():
        path = _modern(key.split("."))
        cfg = _set(cfg, path, value, ".".join(path))
    cfg = _complete(cfg)
    check_config(cfg)
    return cfg


def _complete(cfg: RunConfig) -> RunConfig:
    """Every stream modality gets an entry: its registered defaults where the config names none."""
    missing = [m for m in cfg.stream.modalities if m not in cfg.modalities and m in MODALITIES]
    if not missing:
        return cfg
    return replace(cfg, modalities={**cfg.modalities, **{m: modality_defaults(m) for m in missing}})


def _set(node: Any, path: list[str], value: Any, full_key: str) -> Any:
    if isinstance(node, dict):  # free-form method params: the method's Config parses and checks them
        if len(path) != 1:
            raise ConfigError(f"config key {full_key!r} is nested too deeply")
        return {**node, path[0]: value}
    names = [f.name for f in fields(node)]
    if path[0] not in names:
        raise ConfigError(f"unknown config key {full_key!r}; valid keys here: {', '.join(names)}")
    current = getattr(node, path[0])
    if path[0] == "modalities" and isinstance(node, RunConfig):  # entries keyed by modality name
        if len(path) != 3:
            raise ConfigError(f"config key {full_key!r}: name a modality and a field, e.g. modalities.image.encoder")
        entry = current.get(path[1]) or modality_defaults(path[1], f"modalities.{path[1]}")
        return replace(node, modalities={**current, path[1]: _set(entry, path[2:], value, full_key)})
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


def from_dict(data: dict, cls: type = RunConfig, prefix: str = "", base: Any = None) -> Any:
    """Rebuild a config from a nested dict, rejecting unknown keys and wrong types; with base, the fields data
    does not name keep base's values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be a mapping, got {data!r}")
    if cls is RunConfig:
        data = _modern_sections(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if cls is RunConfig and name == "modalities":
            kwargs[name] = _modalities_from_dict(value)
        elif is_dataclass(hint):
            kwargs[name] = from_dict(value, hint, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, prefix + name)
    if base is not None:
        return replace(base, **kwargs)
    cfg = cls(**kwargs)
    return _complete(cfg) if cls is RunConfig else cfg


def _modern_sections(data: dict) -> dict:
    """A config.yaml from before modalities were a mapping: its per-modality fields moved into `modalities`."""
    data = dict(data)
    for section, name in LEGACY.items():
        if not isinstance(data.get(section), dict):
            continue
        section_data = dict(data[section])
        for key in list(section_data):
            if _modern([section, key])[0] == "modalities":
                entry = dict((data.get("modalities") or {}).get(key, {}), **{name: section_data.pop(key)})
                data["modalities"] = {**(data.get("modalities") or {}), key: entry}
        if section_data or section != "templates":
            data[section] = section_data
        else:
            data.pop(section)
    return data


def _modalities_from_dict(value: Any) -> dict[str, ModalityConfig]:
    if not isinstance(value, dict):
        raise ConfigError(f"config section 'modalities' must be a mapping of modality names, got {value!r}")
    return {str(name): from_dict(entry or {}, ModalityConfig, f"modalities.{name}.",
                                 base=modality_defaults(str(name), f"modalities.{name}"))
            for name, entry in value.items()}


def from_yaml(path: Path) -> RunConfig:
    """Read a config.yaml written by to_yaml (or by an older release: see LEGACY); errors name the file."""
    data = read_yaml(path)
    try:
        cfg = from_dict(data or {})
        check_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg


# ---- the one check of a whole config ---------------------------------------------------------------------


def check_config(cfg: RunConfig) -> None:
    """Every value of cfg inside what is allowed, or a ConfigError that names the key, the value and the rule."""
    bad = [m for m in cfg.stream.modalities if m not in MODALITIES]
    if bad or not cfg.stream.modalities:
        raise ConfigError(f"stream.modalities: unknown {bad}; choose from {', '.join(MODALITIES.names())}")
    if cfg.stream.order not in STREAM_ORDERS:
        raise ConfigError(f"stream.order {cfg.stream.order!r}; choose from {', '.join(STREAM_ORDERS)}")
    if cfg.stream.class_order not in CLASS_ORDERS:
        raise ConfigError(f"stream.class_order {cfg.stream.class_order!r}; choose from {', '.join(CLASS_ORDERS)}")
    if cfg.probe.projection not in ("umap", "pca"):
        raise ConfigError(f"probe.projection {cfg.probe.projection!r}; choose from umap, pca")
    positive = {"data.n_per_class": cfg.data.n_per_class, "stream.tasks_per_modality":
                cfg.stream.tasks_per_modality, "train.epochs": cfg.train.epochs,
                "train.batch_size": cfg.train.batch_size, "train.eval_batch_size": cfg.train.eval_batch_size,
                "model.dim": cfg.model.dim,
                "model.layers": cfg.model.layers, "pretrain.n_per_class": cfg.pretrain.n_per_class,
                "pretrain.epochs": cfg.pretrain.epochs, "pretrain.batch_size": cfg.pretrain.batch_size,
                "model.heads": cfg.model.heads, "probe.per_class": cfg.probe.per_class,
                "encoders.batch_size": cfg.encoders.batch_size, "encoders.shard_rows": cfg.encoders.shard_rows}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    for key, value in (("encoders.workers", cfg.encoders.workers),
                       ("encoders.in_memory_mb", cfg.encoders.in_memory_mb)):
        if value < 0:
            raise ConfigError(f"{key} must be at least 0, got {value}")
    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.seed), ("pretrain.seed", cfg.pretrain.seed)):
        if not 0 <= seed < 2**63:  # what every generator (NumPy, torch) accepts
            raise ConfigError(f"{key} must be an integer in [0, 2**63), got {seed}")
    if cfg.pretrain.shift < 0:
        raise ConfigError(f"pretrain.shift must be at least 0, got {cfg.pretrain.shift}")
    if cfg.pretrain.patience < 0:
        raise ConfigError(f"pretrain.patience must be at least 0 (0: no early stopping), got {cfg.pretrain.patience}")
    for key, value in (("data.test_fraction", cfg.data.test_fraction), ("data.val_fraction", cfg.data.val_fraction),
                       ("pretrain.val_fraction", cfg.pretrain.val_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{key} must be in (0, 1), got {value}")
    if cfg.stream.evaluate_on not in ("test", "val"):
        raise ConfigError(f"stream.evaluate_on {cfg.stream.evaluate_on!r}; choose from test, val")
    _check_ranges(cfg)
    for name, entry in cfg.modalities.items():
        _check_modality(name, entry)
    _registered(ENCODERS, cfg.encoders.text, "encoders.text")
    _registered(BACKBONES, cfg.model.backbone, "model.backbone")
    method_settings(cfg.method)
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'mmcl_lab[tensorboard]'")


def _check_ranges(cfg: RunConfig) -> None:
    """Numbers inside their ranges and a device name torch knows."""
    for key, value, low in (("train.lr", cfg.train.lr, "positive"), ("pretrain.lr", cfg.pretrain.lr, "positive"),
                            ("model.temperature", cfg.model.temperature, "positive"),
                            ("train.weight_decay", cfg.train.weight_decay, "non-negative")):
        if not math.isfinite(value) or value < 0 or (low == "positive" and value == 0):
            raise ConfigError(f"{key} must be a finite {low} number, got {value}")
    if cfg.model.prompt_depth < 0:
        raise ConfigError(f"model.prompt_depth={cfg.model.prompt_depth}; expected 0 or more layers")
    if cfg.model.dim % cfg.model.heads:
        raise ConfigError(f"model.dim={cfg.model.dim} must be divisible by model.heads={cfg.model.heads}")
    if cfg.data.n_per_class < MIN_PER_CLASS:
        raise ConfigError(f"data.n_per_class must be at least {MIN_PER_CLASS} (a train, a validation and a test "
                          f"sample per class), got {cfg.data.n_per_class}")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision {cfg.train.precision!r}; choose from {', '.join(PRECISIONS)}")
    if not DEVICE.fullmatch(cfg.train.device):
        raise ConfigError(f"train.device {cfg.train.device!r}; choose from auto, cpu, cuda, cuda:N, mps")


def _registered(registry, spec: str, key: str):
    """The registry entry that spec ("name", "name@arg" or "name:arg") names, or a ConfigError naming key."""
    name = re.split(r"[@:]", spec, maxsplit=1)[0]
    if name not in registry:
        raise ConfigError(f"{key}: unknown {registry.kind} {name!r}; available: {', '.join(registry.names())}")
    return registry.get(name)


def _check_modality(name: str, entry: ModalityConfig) -> None:
    """A modality entry: registered modality, datasets and encoder of that modality, a template with one slot."""
    key = f"modalities.{name}"
    modality_defaults(name, key)
    for what in ("data", "corpus"):
        source = _registered(DATASETS, getattr(entry, what), f"{key}.{what}")
        if source.modality not in (None, name):
            raise ConfigError(f"{key}.{what}={getattr(entry, what)!r} is {source.modality} data, not {name}")
    encoder = _registered(ENCODERS, entry.encoder, f"{key}.encoder")
    if getattr(encoder, "modality", name) != name:
        raise ConfigError(f"{key}.encoder={entry.encoder!r} encodes {encoder.modality}, not {name}")
    slots = [slot for _, slot, _, _ in string.Formatter().parse(entry.template) if slot is not None]
    if entry.template and slots != [""]:
        raise ConfigError(f"{key}.template {entry.template!r} must hold exactly one {{}} slot for the class name")


def method_settings(method: MethodConfig) -> Any:
    """The method's own Config dataclass filled from method.params: names, types, ranges and choices checked."""
    if method.name not in METHODS:
        raise ConfigError(f"method.name: unknown method {method.name!r}; available: {', '.join(METHODS.names())}")
    cls = METHODS.get(method.name)
    hints = typing.get_type_hints(cls.Config)
    names = [f.name for f in fields(cls.Config)]
    unknown = set(method.params) - set(names)
    if unknown:
        raise ConfigError(f"method {method.name!r} has no parameter(s) {sorted(unknown)}; "
                          f"valid: {', '.join(names) or 'none'}")
    params = {k: coerce(v, hints[k], f"method.params.{k}") for k, v in method.params.items()}
    for key, value in params.items():  # every numeric knob is a size, a count, a weight or a rate
        strict = "temperature" in key or key.endswith("lr")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                not math.isfinite(value) or value < 0 or (strict and value == 0)):
            raise ConfigError(f"method.params.{key} must be a finite {'positive' if strict else 'non-negative'} "
                              f"number, got {value}")
    return cls.Config(**params)
