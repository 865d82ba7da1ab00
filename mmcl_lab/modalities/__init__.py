"""Modalities, one file each, registered by name (base.py holds the contract). Add one: write its file, then
add it to the import line below."""

from .base import Modality, colour, get_modality, marker, register_modality

from . import audio, depth, image, points, video  # noqa: E402,F401  (registration)

__all__ = ["Modality", "colour", "get_modality", "marker", "register_modality"]
