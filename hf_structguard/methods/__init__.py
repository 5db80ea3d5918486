"""Unlearning methods: the registry and one module per method.

Every module of this package is imported here, and importing a module registers its method: adding a method
is adding its module.
"""

import importlib
import pkgutil

from .base import DEFAULT_PRESET, METHOD_REGISTRY, UnlearningMethod, benchmark_rows, get_method, register_method

for _module in pkgutil.iter_modules(__path__):  # sorted by file name: the registration order
    importlib.import_module(f"{__name__}.{_module.name}")

from .structguard import StructGuard  # noqa: E402  (after the loop that registers every method)

__all__ = [
    "DEFAULT_PRESET",
    "METHOD_REGISTRY",
    "StructGuard",
    "UnlearningMethod",
    "benchmark_rows",
    "get_method",
    "register_method",
]
