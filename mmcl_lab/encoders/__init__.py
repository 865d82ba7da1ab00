"""Frozen encoders, one file per family, registered by name (base.py holds the contract)."""

from .base import (CachedText, Encoder, TextEncoder, Tower, TowerTop, as_float_tensor, create_encoder, depth_to_image,
                   log_mel, register_encoder, seeded_init)

from . import clap, clip, efficientnet, hf, openclip, text, tiny  # noqa: E402,F401  (registration)

__all__ = ["CachedText", "Encoder", "TextEncoder", "Tower", "TowerTop", "as_float_tensor", "create_encoder",
           "depth_to_image", "log_mel", "register_encoder", "seeded_init"]
