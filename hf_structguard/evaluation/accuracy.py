"""Top-1 accuracy and batched prediction through the deployed path of a model."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


def _as_predictions(logits_or_predictions: torch.Tensor) -> torch.Tensor:
    """Class predictions from logits ``(N, C)`` (argmax) or pass-through of predictions ``(N,)``."""
    values = torch.as_tensor(logits_or_predictions)
    if values.ndim == 2:
        return values.argmax(dim=1)
    if values.ndim == 1:
        return values.long()
    raise ValueError(f"expected logits (N, C) or predictions (N,), got shape {tuple(values.shape)}")


def accuracy(logits_or_predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (0–100).

    ``logits_or_predictions`` is either logits ``(N, C)`` or integer predictions ``(N,)``; ``labels`` are
    the reference labels ``(N,)`` (for ``A_f``: the ORIGINAL labels of the forget samples).
    """
    predictions = _as_predictions(logits_or_predictions)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"{predictions.shape[0]} predictions but {labels.shape[0]} labels: pass one label per sample")
    if labels.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined: pass at least one sample")
    return float((predictions.cpu() == labels.cpu()).double().mean().item() * 100.0)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, C)`` and pooled embeddings ``(N, d)`` of ``images`` (float ``(N, 3, H, W)`` in [0, 1]).

    Runs ``model(pixel_values, output_embeddings=True)`` in eval mode (the deployed path, i.e. the model's
    configured classification head, projector included when it classifies through it) on the model's device,
    in batches of ``batch_size``; the model's previous train/eval mode is restored afterwards. Outputs are
    float32 CPU tensors.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("predict needs at least one image")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model)
    was_training = model.training
    model.eval()
    logits, embeddings = [], []
    try:
        starts = range(0, images.shape[0], batch_size)
        for start in tqdm(starts, desc="evaluating", unit="batch", leave=False, disable=len(starts) < 8):
            batch = images[start : start + batch_size].to(device=device, dtype=torch.float32)
            output = model(batch, output_embeddings=True)
            if output.embeddings is None:
                raise ValueError("the model returned no embeddings for output_embeddings=True")
            logits.append(output.logits.float().cpu())
            embeddings.append(output.embeddings.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(embeddings)
