"""L2UL (Cha et al., AAAI 2024, "Learning to Unlearn"; docs/methods.md#methods): Adv plus an importance-weighted
parameter anchor.

Loss: ``L = L_Adv + λ·Σ_j (1 − Ω̂_j)(θ_j − θ₀_j)²/2`` (:class:`~hf_structguard.methods.adv.Adv` terms, λ = 1).

- ``θ₀`` = the ORIGINAL (Before) parameters; the sum runs over ALL parameters, classifier included (BatchNorm
  running statistics are buffers, not parameters, and are not anchored).
- ``Ω`` = MAS importance (Aljundi et al., ECCV 2018) on the forget set, computed ONCE from the ORIGINAL model in
  eval mode: ``Ω_j = |∂/∂θ_j (1/k)·Σ_i ‖f(x_i)‖₂|``, the absolute gradient of the mean L2 norm of the logits
  over the k forget samples.
- ``Ω̂`` = ``Ω`` min-max normalised per tensor to [0, 1]; a tensor whose Ω is constant (max = min, e.g. all
  zero) gets ``Ω̂ = 0``, i.e. it is fully anchored. Parameters important for the forget set are free to move,
  the others are pulled back to ``θ₀``.
- Ω̂ is estimated in :meth:`prepare` from the whole forget set (not a minibatch); it depends only on the
  original model and the forget set, so a resumed run recomputes the same values.
Defaults: the baselines' (SGD lr 1e-3, momentum 0.9, weight decay 1e-4, probe ε 4.0, N_adv 20), λ = 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..lora import effective_parameters
from ..structure import importance_penalty
from .adv import Adv
from .base import register_method


@torch.no_grad()
def minmax_normalise(importance: torch.Tensor) -> torch.Tensor:
    """``(Ω − min)/(max − min)`` per tensor; all zeros when ``max == min`` (no spread to normalise)."""
    low, high = importance.min(), importance.max()
    if high <= low:
        return torch.zeros_like(importance)
    return (importance - low) / (high - low)


def mas_importance(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """MAS importance ``|∇_θ mean_i ‖f(x_i)‖₂|`` of every parameter of ``model`` (eval mode) over ``images``."""
    if len(images) == 0:
        raise ValueError("MAS importance needs at least one forget image")
    device = next(model.parameters()).device
    params = {name: p.detach().requires_grad_() for name, p in model.named_parameters()}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for chunk in images.split(batch_size):
            logits = functional_call(model, params, (chunk.to(device),)).logits
            objective = logits.norm(dim=1).sum() / len(images)
            grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
            for name, grad in zip(params, grads):
                if grad is not None:
                    total[name] += grad
    finally:
        model.train(was_training)
    return {name: grad.abs() for name, grad in total.items()}


@register_method("l2ul")
class L2UL(Adv):
    """Adv + ``λ·Σ (1 − Ω̂)(θ − θ₀)²/2`` with forget-set MAS importance Ω̂ of the original model."""

    description = ("L2UL (Cha et al., AAAI 2024): negative cross-entropy on the forget set, cross-entropy on "
                   "targeted adversarial probes, and an importance-weighted (MAS) L2 pull towards the original weights.")
    penalty_weight: float = 1.0  # λ

    def __init__(self, args, original_model, anchors=None, retain_dataset=None):
        super().__init__(args, original_model, anchors, retain_dataset)
        self.theta0 = {name: p.detach() for name, p in original_model.named_parameters()}
        self.omega_hat: dict[str, torch.Tensor] | None = None
        self.anchoring: dict[str, torch.Tensor] = {}  # 1 − Ω̂

    def prepare(self, model):
        """Ω̂ from the ORIGINAL model on the whole forget set (``self.forget_images``, set by the trainer)."""
        if self.forget_images is None:
            raise ValueError("l2ul needs the forget set: set method.forget_images before prepare()")
        names = {name for name, _ in effective_parameters(model)}
        if names != set(self.theta0):
            mismatch = sorted(names ^ set(self.theta0))[:3]
            raise ValueError(f"l2ul: the model's parameters do not match the original model's ({mismatch})")
        importance = mas_importance(self.original_model, self.forget_images, self.args.per_device_train_batch_size)
        self.omega_hat = {name: minmax_normalise(omega) for name, omega in importance.items()}
        self.anchoring = {name: 1 - omega for name, omega in self.omega_hat.items()}

    def parameter_penalty(self, model: nn.Module) -> torch.Tensor:
        """``λ·Σ_j (1 − Ω̂_j)(θ_j − θ₀_j)²/2`` over all parameters θ of ``model`` (of a LoRA model: its merged
        weights, :func:`~hf_structguard.lora.effective_parameters`)."""
        if self.omega_hat is None:
            raise RuntimeError("l2ul importance is not estimated yet: call prepare(model) first")
        return self.penalty_weight * importance_penalty(effective_parameters(model), self.theta0, self.anchoring)

    def compute_loss(self, model, probe_batch, forget_batch, step):
        terms = super().compute_loss(model, probe_batch, forget_batch, step)
        terms["parameter_reg"] = self.parameter_penalty(model)
        terms["loss"] = terms["loss"] + terms["parameter_reg"]
        return terms
