"""Zero-shot: the untrained model."""

from .base import Method, register_method


@register_method("zeroshot")
class ZeroShot(Method):
    """No training at all: the frozen features through the randomly initialised head.

    With an aligned backbone (CLIP-like) this is the zero-shot baseline; here no encoder is pretrained to
    match the text space, so it measures the chance floor of the alignment.
    """

    trains = False

    def parameters(self, model, task):
        return []
