"""StructGuard image classifier: configuration, model, projector and builders (registered with the Auto classes)."""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration import StructGuardConfig
from .loading import build_model
from .modeling import (
    Projector,
    StructGuardForImageClassification,
    StructGuardOutput,
    anchor_space_map,
    apply_cifar_stem,
)

AutoConfig.register(StructGuardConfig.model_type, StructGuardConfig, exist_ok=True)
AutoModelForImageClassification.register(StructGuardConfig, StructGuardForImageClassification, exist_ok=True)

__all__ = [
    "Projector",
    "StructGuardConfig",
    "StructGuardForImageClassification",
    "StructGuardOutput",
    "anchor_space_map",
    "apply_cifar_stem",
    "build_model",
]
