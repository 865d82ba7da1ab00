"""Zero-shot: the pretrained backbone, never trained."""

from .base import Method, register_method


@register_method("zeroshot")
class ZeroShot(Method):
    """No training at all: the pretrained binding model as it is, classifying by its text similarity (the
    zero-shot baseline of CLIP-style continual learning: ZSCL, L2P on CLIP). Its weights stay bit-identical
    through the whole stream."""

    trains = False

    def trainable_parameters(self, model, task):
        return []
