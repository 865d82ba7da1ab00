"""Chance: a randomly initialised model, never trained."""

from .zeroshot import ZeroShot
from .base import register_method


@register_method("chance")
class Chance(ZeroShot):
    """The floor of the alignment: a random binding model (no pretraining), never trained."""

    pretrained = False
