"""Fisher forgetting (Golatkar et al., CVPR 2020, "Eternal Sunshine of the Spotless Net"; docs/methods.md#methods),
with the Fisher information estimated on the FORGET set only (the retain-free setting).

Reading implemented — one noise injection, no gradient updates (paper Table 2: Fisher neither reaches
A_f = 0 nor keeps accuracy, which is what a single scrub gives; iterating the noise until A_f = 0 is not
the paper's procedure):

1. Diagonal Fisher of the ORIGINAL model (eval mode) on the k forget samples, as the expectation over the
   model's own predictive distribution (no label sampling, so it is deterministic):
   ``F_j = (1/k)·Σ_i Σ_c p(c|x_i)·(∂ log p(c|x_i)/∂θ_j)²`` — k·C backward passes.
2. Noise ``θ_j ← θ_j + σ_j·n_j``, ``n_j ~ N(0, 1)`` with ``σ_j = α·F_j^(−1/4)`` (the paper's scrubbing noise
   ``(λσ_h²)^(1/4)·F^(−1/4)`` with ``α = (λσ_h²)^(1/4)``); the inverse Fisher is clamped at 10³ (``F_j ≥ 10⁻³``,
   the clamp of the authors' release), so ``σ_j ≤ α·10^(3/4) ≈ 5.6·α``. Default ``α = 5e-3``: the largest
   noise std (≈ 0.028) is of the order of the authors' release (√(10⁻⁶·10³) ≈ 0.032). Every parameter gets
   noise (BatchNorm running statistics are buffers and do not); noise is drawn on the CPU from a generator
   seeded with ``args.seed``, in ``named_parameters()`` order, so it is identical across runs and ranks.
   Forget-set Fisher values are tiny, so most parameters sit at the clamp (≈ 99 % on the CPU-benchmark
   ResNet-18 with k = 64, where one scrub gives A_f ≈ 28 % and A_test ≈ 26 %, from 89 % / 83 %).
3. The paper's class-forgetting treatment of the classifier rows of the forgotten classes does not apply to
   instance forgetting (no class is forgotten) and is not implemented.

Trainer integration: the scrub happens in :meth:`prepare`; the single trainer step that follows performs no
update (zero loss, learning rate 0) and :meth:`on_step_end` stops training after it, so the logged
``forget_acc`` is the scrubbed model's. Other defaults: the baselines' (unused: no gradient step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import BASELINE_DEFAULTS, UnlearningMethod, register_method


def fisher_diagonal(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``F_j = mean_i Σ_c p(c|x_i)(∂ log p(c|x_i)/∂θ_j)²`` of every parameter of ``model`` (eval mode)."""
    if len(images) == 0:
        raise ValueError("the Fisher information needs at least one forget image")
    device = next(model.parameters()).device
    params = {name: p.detach().requires_grad_() for name, p in model.named_parameters()}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for image in images:
            log_probs = F.log_softmax(functional_call(model, params, (image[None].to(device),)).logits, dim=1)[0]
            probs = log_probs.detach().exp()
            for c in range(len(log_probs)):
                grads = torch.autograd.grad(log_probs[c], list(params.values()), retain_graph=True, allow_unused=True)
                for name, grad in zip(params, grads):
                    if grad is not None:
                        fisher[name] += probs[c] * grad.pow(2)
    finally:
        model.train(was_training)
    return {name: value / len(images) for name, value in fisher.items()}


def fisher_noise_std(fisher: torch.Tensor, alpha: float, max_inverse_fisher: float) -> torch.Tensor:
    """``σ = α·F^(−1/4)`` with the inverse Fisher clamped at ``max_inverse_fisher``."""
    return alpha * fisher.clamp(min=1.0 / max_inverse_fisher).pow(-0.25)


@register_method("fisher")
class FisherForgetting(UnlearningMethod):
    """One-shot Fisher noise from the forget-set Fisher of the original model (module docstring)."""

    defaults = BASELINE_DEFAULTS
    description = ("Fisher forgetting (Golatkar et al., CVPR 2020): noise scaled by the inverse Fisher information, "
                   "estimated with the forget data only.")
    alpha: float = 5e-3
    max_inverse_fisher: float = 1e3

    @classmethod
    def check_config(cls, config) -> None:
        if config.peft:
            raise ValueError("fisher adds full-rank noise to every weight in one shot, without training: a LoRA "
                             "adapter cannot hold it; run fisher without --peft")

    def prepare(self, model):
        """Scrub ``model`` in place: ``θ ← θ + α·F^(−1/4)·N(0, 1)`` (seeded)."""
        if self.forget_images is None:
            raise ValueError("fisher needs the forget set: set method.forget_images before prepare()")
        fisher = fisher_diagonal(self.original_model, self.forget_images)
        generator = torch.Generator().manual_seed(self.args.seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                std = fisher_noise_std(fisher[name], self.alpha, self.max_inverse_fisher)
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.add_(std * noise.to(p.device))

    def param_groups(self, model):
        """All parameters at learning rate 0: the step after the scrub changes nothing."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 0.0}]

    def compute_loss(self, model, probe_batch, forget_batch, step):
        """A zero loss (no forward pass, so BatchNorm statistics stay as scrubbed)."""
        zero = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return {"loss": zero}

    def on_step_end(self, model, step, trainer):
        trainer.control.should_training_stop = True
