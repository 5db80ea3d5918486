"""Unlearning methods: the registry and one module per method (importing a module registers it)."""

from . import adv, fisher, l2ul, neggrad, oracle, rawp, structguard  # noqa: F401  (registration)
from .base import DEFAULT_PRESET, METHOD_REGISTRY, UnlearningMethod, benchmark_rows, get_method, register_method
from .structguard import StructGuard

__all__ = [
    "DEFAULT_PRESET",
    "METHOD_REGISTRY",
    "StructGuard",
    "UnlearningMethod",
    "benchmark_rows",
    "get_method",
    "register_method",
]
