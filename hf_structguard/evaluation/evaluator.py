"""One call that evaluates a (Before or unlearned) model on the test, retain and forget sets."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .accuracy import accuracy, model_device, predict
from .consistency import representation_consistency
from .mia import MIA_FEATURES, membership_inference_audit
from .retrieval import retrieval_metrics

ImagesAndLabels = tuple[torch.Tensor, torch.Tensor]


def _check_set(pair: ImagesAndLabels, name: str) -> None:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"EvalSets.{name} must be an (images, labels) pair")
    images, labels = pair
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise ValueError(f"EvalSets.{name} must hold torch tensors (images float [0, 1], labels int64)")
    if images.ndim != 4:
        raise ValueError(f"EvalSets.{name} images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"EvalSets.{name} is empty: pass at least one sample")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"EvalSets.{name} has {images.shape[0]} images but labels of shape {tuple(labels.shape)}")


@dataclass
class EvalSets:
    """The evaluation data: ``(images, labels)`` pairs, images float ``(N, 3, H, W)`` in [0, 1].

    - ``forget`` labels are the ORIGINAL labels (``A_f`` is accuracy against them).
    - ``retain_subsample``: evaluate the retain set on ``n`` samples only (``A_r``, retrieval queries and
      gallery, consistency, MIA members); the subsample is the first ``n`` of
      ``numpy.random.default_rng(seed).permutation(len(retain))``, so it is fixed by ``seed`` and nested
      across sizes. ``None`` (or ``n >= len(retain)``) uses the whole retain set.
    - ``mia_holdout_test``: test-distribution samples the membership attack never trains on, compared with
      the forget set (``forget_auc``); the attack's non-members are then all of ``test``. ``None``: the first
      ``min(len(forget), len(test) // 2)`` of ``default_rng(seed).permutation(len(test))`` are held out and
      the rest of ``test`` trains the attack.
    """

    test: ImagesAndLabels
    retain: ImagesAndLabels
    forget: ImagesAndLabels
    retain_subsample: int | None = None
    mia_holdout_test: ImagesAndLabels | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("test", "retain", "forget"):
            _check_set(getattr(self, name), name)
        if self.mia_holdout_test is not None:
            _check_set(self.mia_holdout_test, "mia_holdout_test")
        if self.retain_subsample is not None and self.retain_subsample < 1:
            raise ValueError(f"retain_subsample must be a positive size or None, got {self.retain_subsample}")

    def retain_indices(self) -> np.ndarray:
        """Sorted positions in ``retain`` that are evaluated (see ``retain_subsample``)."""
        total = self.retain[0].shape[0]
        if self.retain_subsample is None or self.retain_subsample >= total:
            return np.arange(total)
        return np.sort(np.random.default_rng(self.seed).permutation(total)[: self.retain_subsample])

    def mia_split(self) -> tuple[np.ndarray | None, np.ndarray]:
        """``(holdout positions in test or None, attack non-member positions in test)``."""
        total = self.test[0].shape[0]
        if self.mia_holdout_test is not None:
            return None, np.arange(total)
        holdout = min(self.forget[0].shape[0], total // 2)
        order = np.random.default_rng(self.seed).permutation(total)
        return np.sort(order[:holdout]), np.sort(order[holdout:])


def evaluate_model(
    model: nn.Module,
    sets: EvalSets,
    reference_model: nn.Module | None = None,
    *,
    retrieval: bool = True,
    mia: bool = True,
    batch_size: int = 256,
    retrieval_ks: Sequence[int] = (1, 5, 10),
    consistency_bins: int = 20,
    mia_features: Sequence[str] = ("loss",),
) -> dict:
    """All evaluation numbers of ``model`` (deployed path, eval mode, on the model's device).

    Returns ``{"A_test", "A_r", "A_f"}`` (top-1 %, ``A_f`` against the original labels), ``"retrieval"``:
    ``{"retain": retain queries vs retain gallery, "forget": forget queries vs retain gallery}`` each with
    ``R@k``/``mAP`` in % (:func:`retrieval_metrics`; the gallery is the evaluated retain subsample),
    ``"consistency"`` (only with ``reference_model``, the Before model: :func:`representation_consistency`
    of the evaluated retain samples), ``"mia"`` (:func:`membership_inference_audit` with the evaluated
    retain samples as members, the test split of ``sets.mia_split()`` as non-members and its holdout),
    ``"sizes"`` (samples per set; ``retain`` = evaluated, ``retain_total`` = all), ``"seed"`` and
    ``"seconds"`` (wall-clock of this call).
    """
    _check_evaluation_options(sets, batch_size, retrieval_ks, mia_features if mia else None)
    start = time.perf_counter()
    retain_index = torch.as_tensor(sets.retain_indices())
    retain_images, retain_labels = sets.retain[0][retain_index], sets.retain[1][retain_index]
    test_images, test_labels = sets.test
    forget_images, forget_labels = sets.forget

    test_logits, _ = predict(model, test_images, batch_size)
    retain_logits, retain_embeddings = predict(model, retain_images, batch_size)
    forget_logits, forget_embeddings = predict(model, forget_images, batch_size)
    result: dict = {
        "A_test": accuracy(test_logits, test_labels),
        "A_r": accuracy(retain_logits, retain_labels),
        "A_f": accuracy(forget_logits, forget_labels),
    }
    sizes = {
        "test": int(test_labels.shape[0]),
        "retain": int(retain_labels.shape[0]),
        "retain_total": int(sets.retain[1].shape[0]),
        "forget": int(forget_labels.shape[0]),
    }
    if retrieval:  # on the model's device: the similarity matrices are the heavy part
        device = model_device(model)
        gallery, queries = retain_embeddings.to(device), forget_embeddings.to(device)
        result["retrieval"] = {
            "retain": retrieval_metrics(gallery, retain_labels, ks=retrieval_ks),
            "forget": retrieval_metrics(queries, forget_labels, gallery, retain_labels, ks=retrieval_ks),
        }
    if reference_model is not None:
        _, reference_embeddings = predict(reference_model, retain_images, batch_size)
        result["consistency"] = representation_consistency(
            reference_embeddings, retain_embeddings, bins=consistency_bins
        )
    if mia:
        result["mia"] = _audit_membership(
            model, sets, (test_logits, test_labels), (retain_logits, retain_labels), (forget_logits, forget_labels),
            batch_size, mia_features,
        )
        sizes["mia_holdout"] = result["mia"]["num_holdout"]
    result["sizes"] = sizes
    result["eval_seed"] = sets.seed  # seed of the retain/test subsamples and the MIA split
    result["seconds"] = time.perf_counter() - start
    return result


def _check_evaluation_options(
    sets: EvalSets, batch_size: int, retrieval_ks: Sequence[int], mia_features: Sequence[str] | None
) -> None:
    """ValueError for settings :func:`evaluate_model` cannot use (``mia_features`` None: no audit)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not retrieval_ks or min(retrieval_ks) < 1:
        raise ValueError(f"retrieval_ks must be positive integers, got {list(retrieval_ks)}")
    if mia_features is None:
        return
    unknown = [name for name in mia_features if name not in MIA_FEATURES]
    if unknown or not mia_features:
        raise ValueError(f"mia_features must be a non-empty subset of {MIA_FEATURES}, got {list(mia_features)}")
    nonmember_index = sets.mia_split()[1]
    if len(nonmember_index) < 2 or len(sets.retain_indices()) < 2:
        raise ValueError(
            "the membership attack needs >= 2 evaluated retain samples and >= 2 test samples it trains on, "
            f"got {len(sets.retain_indices())} and {len(nonmember_index)}"
        )


def _audit_membership(
    model: nn.Module,
    sets: EvalSets,
    test: tuple[torch.Tensor, torch.Tensor],
    retain: tuple[torch.Tensor, torch.Tensor],
    forget: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    features: Sequence[str],
) -> dict:
    """:func:`membership_inference_audit` from ``(logits, labels)`` of the test, evaluated retain and forget
    samples: the retain samples are members, the test split of ``sets.mia_split()`` non-members, and its
    holdout (or ``sets.mia_holdout_test``) the unseen samples the forget set is compared with."""
    test_logits, test_labels = test
    holdout_index, nonmember_index = sets.mia_split()
    if sets.mia_holdout_test is not None:
        holdout_images, holdout_labels = sets.mia_holdout_test
        holdout_logits, _ = predict(model, holdout_images, batch_size)
    else:
        holdout_logits, holdout_labels = test_logits[holdout_index], test_labels[holdout_index]
    if holdout_labels.shape[0] == 0:
        holdout_logits = holdout_labels = None
    nonmember = torch.as_tensor(nonmember_index)
    return membership_inference_audit(
        *retain, test_logits[nonmember], test_labels[nonmember], *forget, holdout_logits, holdout_labels,
        features=features, seed=sets.seed,
    )
