"""Semantic anchors: class attribute files, text encoders, anchor sets and attribute generation.

    from hf_structguard.anchors import build_anchor_set, AnchorSet
    anchors = build_anchor_set("shipped:cifar10", "openai/clip-vit-base-patch32", class_names=names)
    anchors.save("out/anchors"); anchors = AnchorSet.load("out/anchors", class_names=names, dim=512)

Command line: ``python -m hf_structguard.anchors --help``.
"""

from .anchor_set import ANCHORS_PER_CLASS, AnchorSet, build_anchor_set
from .attributes import (
    SHIPPED,
    describe,
    load_attributes,
    normalize_class_name,
    save_attributes,
    shipped_attributes,
    validate_attributes,
)
from .encoders import (
    DEFAULT_ENCODER,
    ENCODER_REGISTRY,
    PACKAGED_ENCODER_IDS,
    CLIPTextEncoder,
    SentenceTransformerEncoder,
    SiglipTextEncoder,
    TextEncoder,
    load_text_encoder,
    register_encoder,
)
from .generation import PROMPT_TEMPLATES, build_prompt, generate_attributes, parse_attributes

__all__ = [
    "ANCHORS_PER_CLASS",
    "AnchorSet",
    "CLIPTextEncoder",
    "DEFAULT_ENCODER",
    "ENCODER_REGISTRY",
    "PACKAGED_ENCODER_IDS",
    "PROMPT_TEMPLATES",
    "SHIPPED",
    "SentenceTransformerEncoder",
    "SiglipTextEncoder",
    "TextEncoder",
    "build_anchor_set",
    "build_prompt",
    "describe",
    "generate_attributes",
    "load_attributes",
    "load_text_encoder",
    "normalize_class_name",
    "parse_attributes",
    "register_encoder",
    "save_attributes",
    "shipped_attributes",
    "validate_attributes",
]
