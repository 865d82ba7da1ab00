"""Validation of a whole RunConfig at load time: choices, ranges, finite values, devices, templates."""

from __future__ import annotations

import math
import re
import string
from typing import TYPE_CHECKING

from .config import MODALITIES, STREAM_ORDERS, ConfigError

if TYPE_CHECKING:
    from .config import RunConfig


def check_config(cfg: RunConfig) -> None:
    """Every value of cfg inside what is allowed, or a ConfigError that names the key, the value and the rule."""
    bad = [m for m in cfg.stream.modalities if m not in MODALITIES]
    if bad or not cfg.stream.modalities:
        raise ConfigError(f"stream.modalities: unknown {bad}; choose from {', '.join(MODALITIES)}")
    if cfg.stream.order not in STREAM_ORDERS:
        raise ConfigError(f"stream.order {cfg.stream.order!r}; choose from {', '.join(STREAM_ORDERS)}")
    if cfg.probe.projection not in ("umap", "pca"):
        raise ConfigError(f"probe.projection {cfg.probe.projection!r}; choose from umap, pca")
    positive = {"data.n_per_class": cfg.data.n_per_class, "stream.tasks_per_modality":
                cfg.stream.tasks_per_modality, "train.epochs": cfg.train.epochs,
                "train.batch_size": cfg.train.batch_size, "model.dim": cfg.model.dim,
                "model.layers": cfg.model.layers, "pretrain.n_per_class": cfg.pretrain.n_per_class,
                "pretrain.epochs": cfg.pretrain.epochs, "pretrain.batch_size": cfg.pretrain.batch_size,
                "model.heads": cfg.model.heads, "probe.per_class": cfg.probe.per_class,
                "encoders.batch_size": cfg.encoders.batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if cfg.pretrain.shift < 0:
        raise ConfigError(f"pretrain.shift must be at least 0, got {cfg.pretrain.shift}")
    for key in ("test_fraction", "val_fraction"):
        if not 0.0 < getattr(cfg.data, key) < 1.0:
            raise ConfigError(f"data.{key} must be in (0, 1), got {getattr(cfg.data, key)}")
    if cfg.stream.evaluate_on not in ("test", "val"):
        raise ConfigError(f"stream.evaluate_on {cfg.stream.evaluate_on!r}; choose from test, val")
    _check_ranges(cfg)


# One training, one validation and one test sample per class at the least: the split needs all three.
MIN_PER_CLASS = 3
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_ranges(cfg: RunConfig) -> None:
    """Numbers inside their ranges, a device name torch knows, templates with exactly one {} slot."""
    for key, value, low in (("train.lr", cfg.train.lr, "positive"), ("pretrain.lr", cfg.pretrain.lr, "positive"),
                            ("model.temperature", cfg.model.temperature, "positive"),
                            ("train.weight_decay", cfg.train.weight_decay, "non-negative")):
        if not math.isfinite(value) or value < 0 or (low == "positive" and value == 0):
            raise ConfigError(f"{key} must be a finite {low} number, got {value}")
    if cfg.model.dim % cfg.model.heads:
        raise ConfigError(f"model.dim={cfg.model.dim} must be divisible by model.heads={cfg.model.heads}")
    if cfg.data.n_per_class < MIN_PER_CLASS:
        raise ConfigError(f"data.n_per_class must be at least {MIN_PER_CLASS} (a train, a validation and a test "
                          f"sample per class), got {cfg.data.n_per_class}")
    if not DEVICE.fullmatch(cfg.train.device):
        raise ConfigError(f"train.device {cfg.train.device!r}; choose from auto, cpu, cuda, cuda:N, mps")
    for m in MODALITIES:
        template = getattr(cfg.templates, m)
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        if slots != [""]:
            raise ConfigError(f"templates.{m} {template!r} must hold exactly one {{}} slot for the class name")
