"""Membership-inference audit of the forget set: a loss-based logistic-regression attack.

The attack is trained to tell *members* (retained training samples) from *non-members* (held-out test
samples) by per-sample features of the model's outputs, then asked about the forget set. After successful
unlearning the forget samples should look like non-members: a forget-vs-unseen AUC near 0.5 (chance). An AUC
far *below* 0.5 is as revealing as one far above (the forgotten samples are then recognisable as "less member
than unseen data"), so the distance |AUC − 0.5| is what to read. With few forgotten samples the AUC takes few
values and is noisy: its seeded bootstrap interval says how much.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MIA_FEATURES = ("loss", "entropy", "confidence")
BOOTSTRAP_SAMPLES = 1000


def bootstrap_auc_interval(
    positive: np.ndarray, negative: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95
) -> tuple[float, float]:
    """Percentile ``level`` interval of the ROC-AUC of scores ``positive`` vs ``negative`` over ``samples``
    stratified bootstrap resamples (each group resampled with replacement, ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    pos = np.asarray(positive, dtype=float)[rng.integers(0, len(positive), (samples, len(positive)))]
    neg = np.asarray(negative, dtype=float)[rng.integers(0, len(negative), (samples, len(negative)))]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)[:, : len(positive)]  # ties share their mean rank
    aucs = (ranks.sum(axis=1) - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def _check_pair(logits: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.as_tensor(logits).float()
    labels = torch.as_tensor(labels).long().reshape(-1)
    if logits.ndim != 2:
        raise ValueError(f"{what} logits must be (N, C), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"the {what} set is empty: the audit needs at least one {what} sample")
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} {what} logits but {labels.shape[0]} {what} labels")
    if not torch.isfinite(logits).all():
        raise ValueError(f"the {what} logits are not all finite (a diverged model?): the attack needs finite losses")
    return logits, labels


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample ``(N,)`` against ``labels``."""
    logits, labels = _check_pair(logits, labels, "input")
    return F.cross_entropy(logits, labels, reduction="none")


def mia_features(logits: torch.Tensor, labels: torch.Tensor, features: Sequence[str] = ("loss",)) -> np.ndarray:
    """Attack features ``(N, len(features))``, in the order given.

    ``"loss"``: cross-entropy against the label; ``"entropy"``: entropy of the softmax (nats);
    ``"confidence"``: largest softmax probability.
    """
    unknown = [name for name in features if name not in MIA_FEATURES]
    if unknown or not features:
        raise ValueError(f"features must be a non-empty subset of {MIA_FEATURES}, got {list(features)}")
    logits, labels = _check_pair(logits, labels, "input")
    log_probs = logits.log_softmax(dim=1)
    columns = {
        "loss": lambda: -log_probs.gather(1, labels[:, None]).squeeze(1),
        "entropy": lambda: -(log_probs.exp() * log_probs).sum(dim=1),
        "confidence": lambda: log_probs.max(dim=1).values.exp(),
    }
    return torch.stack([columns[name]() for name in features], dim=1).double().numpy()


def membership_inference_audit(
    member_logits: torch.Tensor,
    member_labels: torch.Tensor,
    nonmember_logits: torch.Tensor,
    nonmember_labels: torch.Tensor,
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    holdout_logits: torch.Tensor | None = None,
    holdout_labels: torch.Tensor | None = None,
    *,
    features: Sequence[str] = ("loss",),
    seed: int = 0,
    cv_folds: int = 5,
) -> dict:
    """Train a membership attack on members vs non-members and apply it to the forget set.

    Inputs are model logits and (true) labels: ``member_*`` retained training samples, ``nonmember_*``
    held-out test samples, ``forget_*`` the forget set (original labels) and, optionally, ``holdout_*``
    further test samples that the attack never saw (ideally as many as forget samples).

    The attack is ``StandardScaler + LogisticRegression(class_weight="balanced")`` on
    :func:`mia_features`. Members and non-members are first balanced: the larger group is subsampled
    (``numpy.random.default_rng(seed)``, without replacement) to the size of the smaller one.

    Returned numbers (AUCs, accuracies and rates are fractions in [0, 1]):

    - ``attack_auc_cv`` / ``attack_accuracy_cv``: ROC-AUC / accuracy (threshold 0.5) of the attack on the
      member-vs-non-member task, from out-of-fold predictions of a seeded stratified
      ``min(cv_folds, n)``-fold cross-validation: how well membership can be inferred at all.
    - ``attack_auc_train``: ROC-AUC of the final attack (fitted on all balanced pairs) on those same pairs.
    - ``forget_member_rate``: fraction of forget samples the final attack calls "member"
      (P(member) >= 0.5); lower is better after unlearning, the ideal being the rate at which the attack
      calls unseen test samples members.
    - ``forget_member_prob_mean``: mean P(member) over the forget set.
    - with ``holdout_*`` only: ``forget_auc``, the ROC-AUC of P(member) separating forget samples
      (positive) from the holdout test samples (negative), 0.5 = indistinguishable from unseen data;
      ``forget_auc_distance`` = |forget_auc − 0.5| (lower is better: far below 0.5 reveals as much as far
      above); ``forget_auc_interval_95``, its seeded stratified bootstrap 95 % interval
      (:func:`bootstrap_auc_interval`), and ``forget_auc_num_values`` = num_forget · num_holdout + 1, the
      number of values the AUC can take (with k = 3 against 3 unseen samples: 10); and
      ``forget_accuracy``, the balanced accuracy (= accuracy for equal sizes) of the 0.5 threshold on
      that forget-vs-holdout set.
    - ``num_members`` / ``num_nonmembers`` (after balancing), ``num_forget``, ``num_holdout``,
      ``features``, ``seed``.
    """
    if (holdout_logits is None) != (holdout_labels is None):
        raise ValueError("pass both holdout_logits and holdout_labels, or neither")
    if cv_folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
    member_x = mia_features(member_logits, member_labels, features)
    nonmember_x = mia_features(nonmember_logits, nonmember_labels, features)
    forget_x = mia_features(forget_logits, forget_labels, features)
    holdout_x = None if holdout_logits is None else mia_features(holdout_logits, holdout_labels, features)
    x, y = _balanced_members(member_x, nonmember_x, seed)
    size = len(y) // 2

    def make_attack():
        return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))

    folds = StratifiedKFold(n_splits=min(cv_folds, size), shuffle=True, random_state=seed)
    cv_prob = cross_val_predict(make_attack(), x, y, cv=folds, method="predict_proba")[:, 1]
    attack = make_attack().fit(x, y)
    forget_prob = attack.predict_proba(forget_x)[:, 1]
    result = {
        "attack_auc_cv": float(roc_auc_score(y, cv_prob)),
        "attack_accuracy_cv": float(accuracy_score(y, cv_prob >= 0.5)),
        "attack_auc_train": float(roc_auc_score(y, attack.predict_proba(x)[:, 1])),
        "forget_member_rate": float(np.mean(forget_prob >= 0.5)),
        "forget_member_prob_mean": float(np.mean(forget_prob)),
        "num_members": size,
        "num_nonmembers": size,
        "num_forget": len(forget_x),
        "num_holdout": 0 if holdout_x is None else len(holdout_x),
        "features": list(features),
        "seed": seed,
    }
    if holdout_x is not None:
        result.update(_forget_vs_holdout(forget_prob, attack.predict_proba(holdout_x)[:, 1], seed))
    return result


def _balanced_members(member_x: np.ndarray, nonmember_x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: members (y = 1) and non-members (y = 0), the larger group subsampled (seeded, without
    replacement, order kept) to the size of the smaller one."""
    size = min(len(member_x), len(nonmember_x))
    if size < 2:
        raise ValueError(
            f"the attack needs >= 2 members and >= 2 non-members, got {len(member_x)} and {len(nonmember_x)}"
        )
    rng = np.random.default_rng(seed)
    member_x = member_x[np.sort(rng.choice(len(member_x), size, replace=False))]
    nonmember_x = nonmember_x[np.sort(rng.choice(len(nonmember_x), size, replace=False))]
    return np.concatenate([member_x, nonmember_x]), np.concatenate([np.ones(size, dtype=int), np.zeros(size, dtype=int)])


def _forget_vs_holdout(forget_prob: np.ndarray, holdout_prob: np.ndarray, seed: int) -> dict:
    """How well P(member) separates forget samples from unseen holdout samples (the ``forget_*`` numbers of
    :func:`membership_inference_audit`)."""
    joint_prob = np.concatenate([forget_prob, holdout_prob])
    joint_y = np.concatenate([np.ones(len(forget_prob), dtype=int), np.zeros(len(holdout_prob), dtype=int)])
    auc = float(roc_auc_score(joint_y, joint_prob))
    return {
        "forget_auc": auc,
        "forget_auc_distance": abs(auc - 0.5),
        "forget_auc_interval_95": list(bootstrap_auc_interval(forget_prob, holdout_prob, seed)),
        "forget_auc_num_values": len(forget_prob) * len(holdout_prob) + 1,
        "forget_accuracy": float(balanced_accuracy_score(joint_y, joint_prob >= 0.5)),
    }
