"""Backbones, one file each, registered by name (base.py holds the contract and the factory)."""

from .base import Backbone, EmbeddingModel, build_backbone, register_backbone

from . import binding, towers  # noqa: E402,F401  (registration)

__all__ = ["Backbone", "EmbeddingModel", "build_backbone", "register_backbone"]
