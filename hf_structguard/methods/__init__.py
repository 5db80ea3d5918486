"""Unlearning methods: the registry and one module per method (importing a module registers it)."""

from . import adv, fisher, l2ul, neggrad, oracle, rawp, structguard  # noqa: F401  (registration)
from .base import METHOD_REGISTRY, UnlearningMethod, get_method, register_method
from .structguard import StructGuard

__all__ = ["METHOD_REGISTRY", "StructGuard", "UnlearningMethod", "get_method", "register_method"]
