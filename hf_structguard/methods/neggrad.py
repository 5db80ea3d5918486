"""NegGrad (Golatkar et al., CVPR 2020 baseline; docs/methods.md#methods): gradient ascent on the forget set.

Loss: ``L = −CE(f(x_f), y_f)`` (batch mean) through the deployed path ``model(x).logits``; the probes are unused.
Defaults (CIFAR-10, docs/methods.md#methods, shared by every baseline): SGD lr 1e-3, momentum 0.9, weight decay 1e-4;
probe ε 4.0 and N_adv 20 (only the probe-based baselines read them); stop at forget accuracy 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BASELINE_DEFAULTS, UnlearningMethod, register_method



def forget_cross_entropy(model: nn.Module, forget_batch: dict) -> torch.Tensor:
    """Mean cross-entropy of the forget batch under the model's deployed path."""
    return F.cross_entropy(model(forget_batch["pixel_values"]).logits, forget_batch["labels"])


@register_method("neggrad")
class NegGrad(UnlearningMethod):
    """Gradient ascent on the forget set: ``loss = deletion = −CE(forget)``."""

    defaults = BASELINE_DEFAULTS
    description = "NegGrad: gradient ascent (negative cross-entropy) on the forget set only."

    def compute_loss(self, model, probe_batch, forget_batch, step):
        deletion = -forget_cross_entropy(model, forget_batch)
        return {"loss": deletion, "deletion": deletion}
