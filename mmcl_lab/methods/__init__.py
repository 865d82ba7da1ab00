"""Continual-learning methods, one file each, registered by name."""

from .base import Context, Method, NoConfig, check_assumptions, create_method, cross_entropy, register_method

from . import chance, comm, er, ewc, finetune, joint, l2p, lwf, slca, zeroshot, zscl  # noqa: E402,F401  (registration)

__all__ = ["Context", "Method", "NoConfig", "check_assumptions", "create_method", "cross_entropy", "register_method"]
