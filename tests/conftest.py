"""Shared fixtures: one cache directory, one ci-preset stream and its backbone per test session; always offline, on
CPU."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from mmcl_lab.backbones import Backbone, build_backbone  # noqa: E402
from mmcl_lab.config import load_config  # noqa: E402
from mmcl_lab.streams import TaskStream, build_stream  # noqa: E402


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mmcl_cache")
    os.environ["MMCL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def ci_cfg(cache_dir):
    return load_config("ci", {"data.cache_dir": str(cache_dir), "train.device": "cpu"})


@pytest.fixture(scope="session")
def ci_stream(ci_cfg) -> TaskStream:
    return build_stream(ci_cfg)


@pytest.fixture(scope="session")
def ci_backbone(ci_cfg, ci_stream) -> Backbone:
    return build_backbone(ci_cfg, ci_stream)


def head(stream: TaskStream, n: int) -> TaskStream:
    """The first n tasks of a stream (for fast tests)."""
    return dataclasses.replace(stream, tasks=stream.tasks[:n])
