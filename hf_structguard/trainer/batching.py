"""Paired batching: the probe set as the Trainer's dataset, and forget minibatches chosen by global step.

The forget set is small (k samples) and cycles: its minibatches form one endless stream made of seeded
permutations of ``range(k)``, and the batch of a step is addressed by ``(step, rank)``. Nothing depends on
iterator state, so a resumed run and every process of a multi-process run draw the same batches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class ProbeDataset(Dataset):
    """A ``ProbeSet`` as dataset items ``{"pixel_values", "labels" (target class), "probe_index"}``."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} probe images but {len(targets)} targets")
        if len(images) == 0:
            raise ValueError("the probe set is empty; generate probes first (probes_per_image >= 1)")
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": self.images[index],
            "labels": self.targets[index],
            "probe_index": torch.tensor(index, dtype=torch.long),
        }


def _permutation(n: int, seed: int, cycle: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(cycle)]).permutation(n)


def cyclic_indices(n: int, batch_size: int, position: int, seed: int = 0) -> torch.Tensor:
    """Indices of batch number ``position`` in the stream of seeded permutations of ``range(n)``.

    With ``batch_size >= n`` each batch is the whole set (in a fresh order).
    """
    if n < 1:
        raise ValueError("cannot draw batches from an empty set")
    size = min(int(batch_size), n)
    start = position * size
    first, offset = divmod(start, n)
    rows = _permutation(n, seed, first)[offset : offset + size]
    if len(rows) < size:
        rows = np.concatenate([rows, _permutation(n, seed, first + 1)[: size - len(rows)]])
    return torch.from_numpy(rows.astype(np.int64))


def cyclic_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    step: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The ``{"pixel_values", "labels", "index"}`` minibatch of global ``step`` for process ``rank`` (of
    ``world_size``); ``index`` holds the rows of ``images`` it was drawn from.

    Each step consumes ``world_size`` consecutive batches of the stream, one per process.
    """
    rows = cyclic_indices(len(images), batch_size, step * world_size + rank, seed)
    return {"pixel_values": images[rows], "labels": labels[rows], "index": rows}
