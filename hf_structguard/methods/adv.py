"""Adv (Cha et al., AAAI 2024, the L2UL paper's ablation; docs/methods.md#methods): deletion plus probe retention.

Loss: ``L = −w_f·CE(f(x_f), y_f) + w_a·CE(f(x_s), y_s)`` with the share weights ``w_f = n_f/(n_f+n_a)`` and
``w_a = n_a/(n_f+n_a)`` of the combined minibatch (n_f forget samples, n_a probes labelled with their TARGET
class), i.e. ``(−Σ CE_f + Σ CE_s)/(n_f+n_a)``. Forget samples and probes go through the model in two
train-mode forwards as in the reference (``batchnorm="separate"``; ``"joint"``: one forward of the
concatenation; ``"frozen"``: running statistics kept). Defaults: the baselines'
(:data:`~hf_structguard.methods.base.BASELINE_DEFAULTS`): SGD lr 1e-3, momentum 0.9, weight decay 1e-4,
probe ε 4.0, N_adv 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BASELINE_DEFAULTS, UnlearningMethod, register_method


def weighted_deletion_retention(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    probe_logits: torch.Tensor,
    probe_labels: torch.Tensor,
    deletion_loss: str = "ascent",
    sample_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_del, L_ret)`` weighted by their share of the combined minibatch (docs/concepts.md#losses, as in L2UL).

    ``L_del = −n_f/(n_f+n_a)·mean CE(forget)`` (``deletion_loss="ascent"``, the paper's) and
    ``L_ret = n_a/(n_f+n_a)·mean CE(probes)``; an empty side contributes 0. ``"nearest_wrong"`` replaces the
    unbounded ascent by ``+CE`` towards each forget sample's highest-scoring wrong class, which moves it just
    across its nearest decision boundary. ``sample_weights`` (n_f,) weight each forget sample's term (default 1).
    """
    total = len(forget_labels) + len(probe_labels)
    if deletion_loss == "ascent":
        per_sample = -F.cross_entropy(forget_logits, forget_labels, reduction="none")
    elif deletion_loss == "nearest_wrong":
        wrong = forget_logits.detach().scatter(1, forget_labels.view(-1, 1), float("-inf")).argmax(dim=1)
        per_sample = F.cross_entropy(forget_logits, wrong, reduction="none")
    else:
        raise ValueError(f"deletion_loss must be 'ascent' or 'nearest_wrong', got {deletion_loss!r}")
    if sample_weights is not None:
        per_sample = per_sample * sample_weights
    deletion = per_sample.sum() / total
    retention = F.cross_entropy(probe_logits, probe_labels, reduction="sum") / total
    return deletion, retention


@register_method("adv")
class Adv(UnlearningMethod):
    """``loss = deletion + retention`` from :func:`weighted_deletion_retention` (forwards per ``batchnorm``)."""

    defaults = BASELINE_DEFAULTS
    description = "Adv: negative cross-entropy on the forget set plus cross-entropy on targeted adversarial probes."

    def compute_loss(self, model, probe_batch, forget_batch, step):
        forget_logits, probe_logits = self.paired_forward(
            lambda x: model(x).logits, forget_batch["pixel_values"], probe_batch["pixel_values"]
        )
        deletion, retention = weighted_deletion_retention(
            forget_logits, forget_batch["labels"], probe_logits, probe_batch["labels"], self.args.deletion_loss
        )
        return {"loss": deletion + retention, "deletion": deletion, "retention": retention}
