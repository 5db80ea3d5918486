"""Forgetting quality against retraining from scratch: the NeurIPS 2023 Machine Unlearning Challenge's score.

Implemented from Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition" (arXiv 2406.09073), §3 (evaluation framework: (ε, δ)-unlearning, per-example ε, forgetting
quality F, final score) and its appendix (the estimator).

* **Statistic.** For each forget example ``s`` and each model, one scalar: the logit-scaled confidence of the
  true label, ``log(p / (1 - p))`` with ``p`` its softmax probability (:func:`logit_scaled_confidence`). Every
  attack below thresholds this scalar, and a threshold rule gives the same error rates under any strictly monotone
  transform, so the per-example loss ``-log p`` (the competition's starter code) gives the same ε.
* **Attacks.** Per example, the outputs of N unlearned models ("positives") and N retrained models ("negatives")
  are separated by every single-threshold rule: for each observed value ``t`` and both orientations (``> t`` or
  ``<= t`` means "unlearned"), the false-positive rate FPR (retrained called unlearned) and false-negative rate FNR.
* **ε of an example** (δ = 0.01, the paper's): for each attack, ``max(log(1 - δ - FPR) - log FNR,
  log(1 - δ - FNR) - log FPR)``; an attack with FPR = FNR = 0 (perfect separation) gives ε = ∞, an attack with
  exactly one of them 0 is discarded (its ratio has no finite-sample estimate), an attack whose both terms are
  undefined (1 - δ below the rates) gives ∞; ε is the largest over the attacks and at least 0.
* **Binning and score.** ε falls into bins of width 0.5 with left edges 0, 0.5, …, 6 (13 bins, the last open:
  ε = ∞ included); bin ``n`` (1-based) scores ``H = 2 / 2^n``: 1 for ε < 0.5, ½ for ε < 1, …, 2^-12 ≈ 0.0002 for
  ε ≥ 6. The forgetting quality ``F`` is the mean of ``H`` over the forget set, in [0, 1]: 1 when no threshold
  attacker tells the unlearned models from the retrained ones, ≈ 0 when every example separates them.
* **Final score.** ``F × (RA_U / RA_R) × (TA_U / TA_R)`` with RA and TA the mean retain and test accuracies of
  the N unlearned (U) and N retrained (R) models (the ratios are not clipped: utility above retraining counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

#: δ of the (ε, δ) estimate (the competition's).
DELTA = 0.01
#: Width and number of the ε bins (left edges 0, 0.5, …, 6).
BIN_WIDTH = 0.5
NUM_BINS = 13


def logit_scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """``log(p / (1 - p))`` of each row's true-label softmax probability ``p``, computed stably from logits.

    ``log p - log(1 - p)`` = the label's logit minus the log-sum-exp of the other logits.
    """
    logits = torch.as_tensor(logits).double()
    labels = torch.as_tensor(labels).long()
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (true_logit - torch.logsumexp(others, dim=1)).numpy()


def threshold_attack_rates(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) of every single-threshold rule separating one example's unlearned from its retrained outputs.

    Thresholds are the observed values; each is used in both orientations. Positives are the unlearned models.
    """
    unlearned = np.asarray(unlearned, dtype=float).ravel()
    retrained = np.asarray(retrained, dtype=float).ravel()
    if len(unlearned) == 0 or len(retrained) == 0:
        raise ValueError("threshold attacks need at least one unlearned and one retrained output")
    thresholds = np.unique(np.concatenate([unlearned, retrained]))
    # "above t means unlearned": FPR = retrained above t, FNR = unlearned at or below t.
    fpr_above = (retrained[None, :] > thresholds[:, None]).mean(axis=1)
    fnr_above = (unlearned[None, :] <= thresholds[:, None]).mean(axis=1)
    # The opposite orientation swaps what counts as an error: "at or below t means unlearned".
    return np.concatenate([fpr_above, 1.0 - fpr_above]), np.concatenate([fnr_above, 1.0 - fnr_above])


def epsilon_from_rates(fpr: Sequence[float], fnr: Sequence[float], delta: float = DELTA) -> float:
    """The ε of one example from its attacks' error rates (module docstring); >= 0, ∞ when separable."""
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    epsilon = 0.0
    for false_positive, false_negative in zip(np.asarray(fpr, float), np.asarray(fnr, float), strict=True):
        if false_positive == 0 and false_negative == 0:
            return math.inf
        if false_positive == 0 or false_negative == 0:
            continue
        terms = [
            math.log(1 - delta - false_positive) - math.log(false_negative) if 1 - delta > false_positive else math.nan,
            math.log(1 - delta - false_negative) - math.log(false_positive) if 1 - delta > false_negative else math.nan,
        ]
        defined = [term for term in terms if not math.isnan(term)]
        epsilon = max(epsilon, max(defined) if defined else math.inf)
    return epsilon


def per_example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """ε of every forget example from ``(N_u, S)`` unlearned and ``(N_r, S)`` retrained statistics."""
    unlearned = np.asarray(unlearned, dtype=float)
    retrained = np.asarray(retrained, dtype=float)
    if unlearned.ndim != 2 or retrained.ndim != 2 or unlearned.shape[1] != retrained.shape[1]:
        raise ValueError(f"expected (models, examples) arrays with the same number of examples, got "
                         f"{unlearned.shape} and {retrained.shape}")
    return np.array([
        epsilon_from_rates(*threshold_attack_rates(unlearned[:, s], retrained[:, s]), delta=delta)
        for s in range(unlearned.shape[1])
    ])


def epsilon_score(epsilons: np.ndarray) -> np.ndarray:
    """``H(ε) = 2 / 2^n`` with ``n`` the 1-based bin of ε (module docstring)."""
    edges = np.arange(NUM_BINS) * BIN_WIDTH
    bins = np.digitize(np.asarray(epsilons, dtype=float), edges)
    return 2.0 / 2.0**bins


def forgetting_quality(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> float:
    """F in [0, 1]: the mean ``H(ε)`` over the forget examples (columns) of the two statistic arrays."""
    return float(epsilon_score(per_example_epsilon(unlearned, retrained, delta)).mean())


def final_score(
    quality: float, retain_unlearned: float, retain_retrained: float, test_unlearned: float, test_retrained: float
) -> dict[str, float]:
    """The competition's final score and its two utility ratios (accuracies in any common unit)."""
    if retain_retrained <= 0 or test_retrained <= 0:
        raise ValueError("the retrained models' retain and test accuracies must be > 0 to form the ratios")
    retain_ratio = retain_unlearned / retain_retrained
    test_ratio = test_unlearned / test_retrained
    return {"retain_ratio": retain_ratio, "test_ratio": test_ratio, "final_score": quality * retain_ratio * test_ratio}
