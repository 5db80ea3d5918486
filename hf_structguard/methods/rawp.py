"""RAWP: adversarial weight perturbation (Wu et al., NeurIPS 2020, "Adversarial Weight Perturbation Helps
Robust Generalization") applied repeatedly with the forget data to induce misclassification (docs/methods.md#methods).

Reading implemented (AWP's ``min_w max_v L(w + v)`` with ``L`` = NegGrad's deletion loss ``−CE(forget)``):

1. Each step, the deletion loss ``L_del = −CE(f_w(x_f), y_f)`` is differentiated at the current weights ``w``.
2. The layer-wise relative perturbation ``v_l = γ·‖w_l‖·g_l/‖g_l‖`` (``g_l = ∇_{w_l} L_del``) is the one-step
   ascent direction of the loss the step minimises, i.e. the worst case for the step (it moves the weights
   back towards classifying the forget samples correctly). As in AWP, only weight tensors with ≥ 2 dimensions
   (convolution kernels, linear weights, the classifier included) are perturbed; biases and BatchNorm affine
   parameters are not. γ = 5e-3 (AWP's default); a layer with zero gradient is not perturbed.
3. The returned loss is ``L_del`` at ``w + v``: its gradient w.r.t. ``w`` is the gradient at the perturbed
   weights. ``v`` is applied through :func:`torch.func.functional_call` and never written into the model, so
   "removing v" is implicit: only the optimizer update changes the weights.
4. BatchNorm: the ascent pass (1) runs on copies of the running statistics (discarded), the perturbed pass (3)
   updates the model's running statistics, as AWP's perturbed training forward does. AWP's proxy optimiser
   step is replaced by the gradient direction it normalises away (no proxy weight decay).
The probes are unused. Defaults: the baselines' (SGD lr 1e-3, momentum 0.9, weight decay 1e-4), γ = 5e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import register_method
from .neggrad import NegGrad

_EPS = 1e-20


def adversarial_weight_perturbation(
    model: nn.Module, forget_batch: dict, gamma: float
) -> dict[str, torch.Tensor]:
    """``{name: v_l}`` with ``v_l = γ‖w_l‖·∇L_del/‖∇L_del‖`` for every trainable weight tensor with ≥ 2 dims.

    The gradient pass leaves the model untouched (BatchNorm running statistics updated on copies).
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = [n for n, p in params.items() if p.ndim > 1]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    logits = functional_call(model, {**params, **buffers}, (forget_batch["pixel_values"],)).logits
    deletion = -F.cross_entropy(logits, forget_batch["labels"])
    grads = torch.autograd.grad(deletion, [params[n] for n in names], allow_unused=True)
    return {
        name: gamma * params[name].detach().norm() * grad / (grad.norm() + _EPS)
        for name, grad in zip(names, grads)
        if grad is not None
    }


@register_method("rawp")
class RAWP(NegGrad):
    """NegGrad's deletion loss evaluated at adversarially perturbed weights ``w + v`` (see module docstring)."""

    description = "RAWP: adversarial weight perturbations applied repeatedly with the forget data to induce misclassification."
    gamma: float = 5e-3

    def compute_loss(self, model, probe_batch, forget_batch, step):
        perturbation = adversarial_weight_perturbation(model, forget_batch, self.gamma)
        perturbed = {n: p + perturbation[n] if n in perturbation else p for n, p in model.named_parameters()}
        logits = functional_call(model, perturbed, (forget_batch["pixel_values"],)).logits
        deletion = -F.cross_entropy(logits, forget_batch["labels"])
        norm = torch.stack([v.norm() for v in perturbation.values()]).norm() if perturbation else deletion.new_zeros(())
        return {"loss": deletion, "deletion": deletion, "perturbation_norm": norm}
