"""Tiny models and problems shared by the structure / structguard / trainer / distributed tests."""

import torch
import torch.nn.functional as F

from hf_structguard.anchors import AnchorSet
from hf_structguard.modeling import StructGuardConfig, StructGuardForImageClassification
from hf_structguard.probes import ProbeSet

TINY_BACKBONE = {"channels": [8, 16, 32, 64], "stem_width": 8}  # resnet10t with d = 64 pooled features


def tiny_model(num_labels: int = 4, seed: int = 0, image_size: int = 16) -> StructGuardForImageClassification:
    """A randomly initialised, seeded resnet10t-based classifier with 64 features."""
    torch.manual_seed(seed)
    config = StructGuardConfig(
        backbone="resnet10t", backbone_kwargs=TINY_BACKBONE, num_labels=num_labels, image_size=image_size
    )
    return StructGuardForImageClassification(config)


def tiny_problem(k: int = 6, num_probes: int = 48, num_labels: int = 4, anchor_dim: int = 32, seed: int = 1):
    """Random forget set, probes (targets cover every class) and anchors: (images, labels, ProbeSet, AnchorSet)."""
    generator = torch.Generator().manual_seed(seed)
    forget_images = torch.rand(k, 3, 16, 16, generator=generator)
    forget_labels = torch.randint(0, num_labels, (k,), generator=generator)
    probe_images = torch.rand(num_probes, 3, 16, 16, generator=generator)
    targets = torch.arange(num_probes) % num_labels
    source = torch.arange(num_probes) % k
    probes = ProbeSet(probe_images, targets, source, forget_labels[source])
    names = [str(c) for c in range(num_labels)]
    anchors = AnchorSet(names, F.normalize(torch.randn(num_labels, anchor_dim, generator=generator), dim=1))
    return forget_images, forget_labels, probes, anchors
