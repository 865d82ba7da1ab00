"""Fine-tuning: the lower bound."""

from .base import Method, register_method


@register_method("finetune")
class Finetune(Method):
    """Plain sequential fine-tuning of the whole head on each task; nothing protects old tasks."""
