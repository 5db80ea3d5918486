"""StructGuard image classifier: timm feature extractor ``g``, linear classifier ``h``, optional projector ``p``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration import StructGuardConfig


def anchor_space_map(d: int, d_a: int, seed: int = 0) -> torch.Tensor:
    """Fixed random ``(d, d_a)`` map from feature space to anchor space (docs/concepts.md#structure).

    Gaussian entries with L2-normalised columns, drawn on the CPU from ``torch.Generator().manual_seed(seed)``
    so that it is identical across processes and machines. Used on the ORIGINAL model's features when
    ``d != d_a`` (``features @ anchor_space_map(d, d_a, config.feature_map_seed)``).
    """
    if d < 1 or d_a < 1:
        raise ValueError(f"anchor_space_map needs positive sizes, got d={d}, d_a={d_a}.")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    weight = torch.randn(d, d_a, generator=generator, dtype=torch.float32)
    return weight / weight.norm(dim=0, keepdim=True)


class Projector(nn.Module):
    """``Linear(d, m) -> BatchNorm1d(m) -> ReLU -> Linear(m, d)`` with torch's default initialisation.

    ``residual=True`` returns ``x + mlp(x)`` and zero-initialises the last layer, so a fresh projector is the
    identity map: the model it is added to keeps its predictions bit for bit until the first update.
    """

    def __init__(self, num_features: int, hidden_dim: int, residual: bool = False):
        super().__init__()
        if num_features < 1 or hidden_dim < 1:
            raise ValueError(f"Projector sizes must be positive, got d={num_features}, m={hidden_dim}.")
        self.residual = residual
        self.fc1 = nn.Linear(num_features, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, num_features)
        if residual:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Project ``x`` (N, d); with ``return_hidden`` also return the hidden layer after BN+ReLU (N, m)."""
        hidden = self.act(self.bn(self.fc1(x)))
        out = self.fc2(hidden)
        if self.residual:
            out = x + out
        return (out, hidden) if return_hidden else out


def apply_cifar_stem(model: nn.Module, remove_maxpool: bool = True) -> None:
    """Turn a timm ResNet stem into a CIFAR stem in place: the first conv becomes 3×3 stride 1.

    A single-conv stem (``conv1``: Conv2d) is replaced by a new 3×3 stride-1 conv with the same channels;
    a deep stem (``conv1``: Sequential, e.g. ``resnet10t``) gets its first conv replaced the same way.
    ``remove_maxpool`` replaces ``maxpool`` by an identity.
    """
    stem = getattr(model, "conv1", None)
    if isinstance(stem, nn.Conv2d):
        parent, key, old = model, "conv1", stem
    elif isinstance(stem, nn.Sequential) and len(stem) > 0 and isinstance(stem[0], nn.Conv2d):
        parent, key, old = stem, "0", stem[0]
    else:
        raise ValueError(
            f"cifar_stem needs a timm ResNet-style backbone with a `conv1` stem; {type(model).__name__} has none. "
            "Use cifar_stem=False for this architecture."
        )
    new = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=old.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet conv init
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, key, new.to(device=old.weight.device, dtype=old.weight.dtype))
    if remove_maxpool and hasattr(model, "maxpool"):
        model.maxpool = nn.Identity()


@dataclass
class StructGuardOutput(ImageClassifierOutput):
    """:class:`~transformers.modeling_outputs.ImageClassifierOutput` plus ``embeddings``: pooled ``g(x)``, (N, d)."""

    embeddings: torch.Tensor | None = None


class StructGuardForImageClassification(PreTrainedModel):
    """Image classifier ``f = h ∘ g`` with an optional projector ``p`` (deployed path ``h(p(g(x)))``).

    Inputs are RGB images in [0, 1]; normalisation with ``config.mean``/``config.std`` happens inside.
    """

    config_class = StructGuardConfig
    config: StructGuardConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False
    _no_split_modules = ["StructGuardForImageClassification"]

    def __init__(self, config: StructGuardConfig):
        super().__init__(config)
        self.backbone = timm.create_model(
            config.backbone, pretrained=False, num_classes=0, **(config.backbone_kwargs or {})
        )
        if config.cifar_stem:
            apply_cifar_stem(self.backbone, config.cifar_stem_remove_maxpool)
        num_features = int(self.backbone.num_features)
        if config.num_features is None:
            config.num_features = num_features
        elif config.num_features != num_features:
            raise ValueError(
                f"config.num_features={config.num_features} but timm '{config.backbone}' gives {num_features} "
                "pooled features; fix num_features or the backbone."
            )
        self.classifier = nn.Linear(num_features, config.num_labels)
        self.projector = (
            Projector(num_features, config.projector_dim, config.projector_residual) if config.projector_dim else None
        )
        self.post_init()

    def init_weights(self):
        """Keep the initialisation timm and torch gave the freshly built modules.

        ``from_pretrained`` still initialises weights missing from a checkpoint (via ``_init_weights``).
        """
        self.tie_weights(recompute_mapping=False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then give each tensor the loader left unaligned its own memory.

        transformers hands out views into the safetensors file at arbitrary offsets; CPU kernels choose their
        summation order by alignment, so without the copy a reloaded model can differ from the saved one in
        the last bit of its logits.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        return loaded

    def _init_weights(self, module):
        # Only reached for tensors missing from a checkpoint; loaded tensors are protected by transformers' guard.
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with the config's per-channel statistics."""
        mean = torch.as_tensor(self.config.mean, dtype=pixel_values.dtype, device=pixel_values.device)
        std = torch.as_tensor(self.config.std, dtype=pixel_values.dtype, device=pixel_values.device)
        return (pixel_values - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``g(normalise(x))``, shape (N, d)."""
        return self.backbone(self.normalize(pixel_values))

    def _use_projector(self, use_projector: bool | None) -> bool:
        if use_projector is None:
            return self.projector is not None and self.config.classify_through_projector
        if use_projector and self.projector is None:
            raise ValueError("use_projector=True but the model has no projector; call add_projector() first.")
        return bool(use_projector)

    def classify(self, features: torch.Tensor, use_projector: bool | None = None) -> torch.Tensor:
        """Logits ``h(p(z))`` or ``h(z)`` from pooled features; None follows ``config.classify_through_projector``."""
        if self._use_projector(use_projector):
            features = self.projector(features)
        return self.classifier(features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        use_projector: bool | None = None,
        output_embeddings: bool = False,
    ) -> StructGuardOutput:
        """Classify images in [0, 1]; ``loss`` is the cross-entropy when ``labels`` are given."""
        embeddings = self.features(pixel_values)
        logits = self.classify(embeddings, use_projector)
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        return StructGuardOutput(loss=loss, logits=logits, embeddings=embeddings if output_embeddings else None)

    def add_projector(self, anchor_dim: int, hidden_dim: int | None = None, residual: bool = False) -> None:
        """Attach a fresh projector ``p`` with hidden size ``m = hidden_dim or anchor_dim``; records it in the config.

        When ``d != anchor_dim`` the structure of a plain projector is read at its hidden layer, so ``m`` must
        equal ``anchor_dim``; a ``residual`` projector (identity at start) is read at its output, like features.
        """
        if self.projector is not None:
            raise ValueError("The model already has a projector.")
        d = self.config.num_features
        hidden_dim = anchor_dim if hidden_dim is None else hidden_dim
        if anchor_dim < 1 or hidden_dim < 1:
            raise ValueError(f"anchor_dim and hidden_dim must be positive, got {anchor_dim}, {hidden_dim}.")
        if anchor_dim != d and hidden_dim != anchor_dim and not residual:
            raise ValueError(
                f"With d={d} != anchor_dim={anchor_dim} the structure is read at the projector's hidden layer, "
                f"so hidden_dim must equal anchor_dim (got {hidden_dim})."
            )
        ref = self.classifier.weight
        self.projector = Projector(d, hidden_dim, residual).to(device=ref.device, dtype=ref.dtype)
        self.projector.train(self.training)
        self.config.projector_residual = residual
        self.config.projector_dim = hidden_dim
        self.config.anchor_dim = anchor_dim

    def backbone_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the feature extractor ``psi`` only, named as in ``named_parameters()``."""
        return self.backbone.named_parameters(prefix="backbone")
