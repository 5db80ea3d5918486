"""Representation consistency: how much the embeddings of retained samples moved during unlearning."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def representation_consistency(
    reference_embeddings: torch.Tensor, embeddings: torch.Tensor, *, bins: int = 20
) -> dict:
    """Per-sample cosine similarity between Before (``reference_embeddings``) and after (``embeddings``).

    Row i of both tensors must be the same retained sample. Returns ``{"mean": float, "min": float,
    "histogram": {"bins": [edges, bins + 1 of them over [-1, 1]], "counts": [ints, bins of them]}}``.
    Identical embeddings give mean 1.
    """
    reference = torch.as_tensor(reference_embeddings).float()
    current = torch.as_tensor(embeddings).float()
    if reference.ndim != 2 or current.ndim != 2:
        raise ValueError(f"embeddings must be (N, d), got {tuple(reference.shape)} and {tuple(current.shape)}")
    if reference.shape != current.shape:
        raise ValueError(
            f"reference {tuple(reference.shape)} and current {tuple(current.shape)} embeddings differ in shape: "
            "pass the same samples, embedded by models with the same feature size"
        )
    if reference.shape[0] == 0:
        raise ValueError("representation consistency of an empty set is undefined: pass at least one sample")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    cosine = F.cosine_similarity(reference, current.to(reference.device), dim=1).clamp(-1.0, 1.0).cpu().double()
    counts, edges = np.histogram(cosine.numpy(), bins=bins, range=(-1.0, 1.0))
    return {
        "mean": float(cosine.mean()),
        "min": float(cosine.min()),
        "histogram": {"bins": [float(edge) for edge in edges], "counts": [int(count) for count in counts]},
    }
