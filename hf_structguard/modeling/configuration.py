"""Configuration of the StructGuard image classifier (a timm backbone, a linear head, an optional projector)."""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers import PretrainedConfig


class StructGuardConfig(PretrainedConfig):
    """Configuration of :class:`StructGuardForImageClassification`.

    Args:
        backbone: timm architecture name of the feature extractor ``g`` (built with ``num_classes=0``).
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. the ``model_args`` of a
            timm checkpoint), recorded so that a reload rebuilds the same network.
        image_size: square input size the model was trained at (pixels).
        mean, std: per-channel input normalisation, applied inside ``forward`` to images in [0, 1].
            Default: ImageNet statistics.
        cifar_stem: replace the ResNet stem by a 3×3 stride-1 convolution (CIFAR-style).
        cifar_stem_remove_maxpool: with ``cifar_stem``, also drop the stem max-pool.
        num_features: ``d``, the pooled feature size; filled from the timm model when ``None``.
        projector_dim: ``m``, the projector's hidden size; ``None`` means the model has no projector.
        anchor_dim: ``d_a``, the anchor (text-embedding) size the structure is compared in. The structure is
            read at the projector output when ``d == d_a``, else at its hidden layer (then ``m`` must equal
            ``d_a``). A residual projector's output lives in feature space and is read like features.
        projector_residual: the projector is ``z + p(z)`` with a zero-initialised last layer, so that the model
            predicts exactly as before when it is added (the default StructGuard); False is the reference's
            plain MLP.
        feature_map_seed: seed of the fixed random ``d -> d_a`` map applied to the original model's features
            when ``d != d_a`` (see :func:`hf_structguard.modeling.anchor_space_map`).
        classify_through_projector: when a projector exists, predict with ``h(p(g(x)))`` (the deployed
            path) instead of ``h(g(x))``.
    """

    model_type = "structguard"

    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] | None = None
    image_size: int = 32
    mean: list[float] | None = None
    std: list[float] | None = None
    cifar_stem: bool = False
    cifar_stem_remove_maxpool: bool = True
    num_features: int | None = None
    projector_dim: int | None = None
    anchor_dim: int | None = None
    projector_residual: bool = False
    feature_map_seed: int = 0
    classify_through_projector: bool = True

    def __post_init__(self, **kwargs):
        self.mean = [float(v) for v in (IMAGENET_DEFAULT_MEAN if self.mean is None else self.mean)]
        self.std = [float(v) for v in (IMAGENET_DEFAULT_STD if self.std is None else self.std)]
        self.backbone_kwargs = dict(self.backbone_kwargs or {})
        super().__post_init__(**kwargs)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got mean={self.mean}, std={self.std}.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}.")
        if self.image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size}.")
        if {"num_classes", "pretrained"} & set(self.backbone_kwargs):
            raise ValueError("backbone_kwargs must not set num_classes or pretrained (the backbone has no head).")
        if (self.projector_dim is None) != (self.anchor_dim is None):
            raise ValueError(
                "projector_dim and anchor_dim are set together (use model.add_projector(anchor_dim)); got "
                f"projector_dim={self.projector_dim}, anchor_dim={self.anchor_dim}."
            )
