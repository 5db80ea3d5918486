"""Oracle (docs/methods.md#methods, reference only): NegGrad with the RETAIN set, which the retain-free setting forbids.

Loss: ``L = CE(f(x_r), y_r) − CE(f(x_f), y_f)`` (two batch means, unweighted); the probes are unused. The
retain batch of a step is drawn deterministically from ``retain_dataset`` by global step (and process rank)
with :func:`~hf_structguard.trainer.batching.cyclic_indices` (seed ``args.seed``), of the forget batch size
(``forget_batch_size`` or ``per_device_train_batch_size``). Retain and forget samples go through the model in
one forward pass. ``retain_dataset`` is an ``(images, labels)`` pair of tensors or a torch ``Dataset`` whose
items are ``{"pixel_values", "labels"}`` dicts or ``(image, label)`` pairs. Construction without retain data
raises ValueError. Defaults: the baselines' (SGD lr 1e-3, momentum 0.9, weight decay 1e-4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import BASELINE_DEFAULTS, UnlearningMethod, register_method


def _retain_item(item) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(item, dict):
        return item["pixel_values"], torch.as_tensor(item["labels"])
    image, label = item
    return image, torch.as_tensor(label)


@register_method("oracle")
class Oracle(UnlearningMethod):
    """``loss = retention + deletion = CE(retain batch) − CE(forget batch)``."""

    defaults = BASELINE_DEFAULTS
    description = ("Oracle: cross-entropy on retain batches minus cross-entropy on forget batches. It USES THE RETAIN "
                   "SET and is a reference, not retain-free unlearning.")
    needs_retain = True

    def __init__(self, args, original_model, anchors=None, retain_dataset=None):
        super().__init__(args, original_model, anchors, retain_dataset)
        if isinstance(retain_dataset, (tuple, list)):
            if len(retain_dataset) != 2 or len(retain_dataset[0]) != len(retain_dataset[1]):
                raise ValueError("oracle: retain_dataset must be an (images, labels) pair of equal length")
            self.num_retain = len(retain_dataset[0])
        elif isinstance(retain_dataset, Dataset):
            self.num_retain = len(retain_dataset)
        else:
            raise ValueError(
                "oracle: retain_dataset must be an (images, labels) pair or a torch Dataset, "
                f"got {type(retain_dataset).__name__}"
            )
        if self.num_retain == 0:
            raise ValueError("oracle: retain_dataset is empty; pass the retain set (train minus forget)")

    def retain_batch(self, step: int) -> dict[str, torch.Tensor]:
        """The retain minibatch of global ``step`` for this process (deterministic)."""
        from ..trainer.batching import cyclic_indices  # deferred: the trainer package imports the method registry

        data, args = self.retain_dataset, self.args
        size = args.forget_batch_size or args.per_device_train_batch_size
        rows = cyclic_indices(self.num_retain, size, step * args.world_size + args.process_index, args.seed)
        if isinstance(data, (tuple, list)):
            return {"pixel_values": data[0][rows], "labels": torch.as_tensor(data[1])[rows].long()}
        images, labels = zip(*(_retain_item(data[int(i)]) for i in rows))
        return {"pixel_values": torch.stack(images), "labels": torch.stack(labels).long()}

    def compute_loss(self, model, probe_batch, forget_batch, step):
        retain = self.retain_batch(step)
        device = forget_batch["pixel_values"].device
        n_r = len(retain["labels"])
        logits = model(torch.cat([retain["pixel_values"].to(device), forget_batch["pixel_values"]])).logits
        retention = F.cross_entropy(logits[:n_r], retain["labels"].to(device))
        deletion = -F.cross_entropy(logits[n_r:], forget_batch["labels"])
        return {"loss": retention + deletion, "retention": retention, "deletion": deletion}
