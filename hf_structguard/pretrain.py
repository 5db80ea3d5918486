"""Train a "Before" classifier with ``transformers.Trainer`` (any timm architecture, optional CIFAR stem).

Used by ``scripts/pretrain.py`` and by the embedded default run, which trains a small model on the digits
data the first time and caches it. The recipe mirrors the benchmark checkpoint's: SGD with Nesterov
momentum, cosine schedule with warm-up, label smoothing, random crops (reflect padding) and optional
horizontal flips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from transformers import Trainer, TrainingArguments

from .data import ImageClassificationData
from .errors import check_output_dir
from .evaluation import accuracy, predict
from .modeling import StructGuardForImageClassification, build_model


@dataclass
class PretrainArguments:
    """How to train a Before model from scratch."""

    backbone: str = field(default="resnet18", metadata={"help": "timm architecture name of the backbone."})
    image_size: int | None = field(
        default=None,
        metadata={"help": "Square input size in pixels. Default: the data's own (the larger side of the first training image)."},
    )
    cifar_stem: bool = field(
        default=False,
        metadata={"help": "Replace the stem by a 3x3 stride-1 conv without max-pool (the paper's CIFAR ResNet)."},
    )
    epochs: float = field(default=15.0, metadata={"help": "Training epochs."})
    learning_rate: float = field(default=0.1, metadata={"help": "Peak SGD learning rate (cosine schedule)."})
    batch_size: int = field(default=128, metadata={"help": "Training batch size."})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing of the cross-entropy."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up."})
    hflip: bool = field(default=True, metadata={"help": "Random horizontal flips (turn off for digits/text)."})
    crop_padding: int = field(default=4, metadata={"help": "Reflect padding of the random crop; 0 disables it."})
    seed: int = field(default=0, metadata={"help": "Random seed (initialisation, shuffling, augmentation)."})
    single_thread: bool = field(
        default=False,
        metadata={"help": "Train on one CPU thread with deterministic algorithms, so the weights are bit-identical "
                          "whatever the machine's thread count (slower on a CPU with several cores)."},
    )
    progress_bar: bool = field(default=True, metadata={"help": "Show a progress bar with the time left."})

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(f"epochs, learning_rate and batch_size must be positive, got {self.epochs}, "
                             f"{self.learning_rate} and {self.batch_size}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    def cache_key(self, data_source: str) -> str:
        """A short hash naming this recipe on this data, for the Before-model cache."""
        recipe = {key: value for key, value in dataclasses.asdict(self).items() if key != "progress_bar"}
        payload = json.dumps({"data": data_source, **recipe}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@contextlib.contextmanager
def thread_independent() -> Iterator[None]:
    """Run the block on one CPU thread with deterministic algorithms, then restore both settings.

    Parallel CPU kernels split their sums by thread count, so the same seed trains different weights on
    1 and on 2 threads; one thread gives the same bits on a machine whatever its thread count.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class _AugmentedImages(Dataset):
    """(images, labels) tensors as Trainer items, with training-time augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, args: PretrainArguments):
        self.images, self.labels = images, labels
        steps = []
        if args.crop_padding > 0:
            steps.append(v2.RandomCrop(args.image_size, padding=args.crop_padding, padding_mode="reflect"))
        if args.hflip:
            steps.append(v2.RandomHorizontalFlip())
        self.transform = v2.Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return {"pixel_values": image, "labels": self.labels[index]}


def pretrain_classifier(
    data: ImageClassificationData, args: PretrainArguments, output_dir: str | os.PathLike
) -> tuple[StructGuardForImageClassification, dict]:
    """Train a classifier on ``data.train``, save it to ``output_dir`` and return it with its metrics:
    ``train_accuracy`` (on the un-augmented training images) and ``test_accuracy`` (%), ``epochs``, ``recipe``
    (``image_size`` filled from the data when it was None). ``args.single_thread`` trains under
    :func:`thread_independent`. An ``output_dir`` that cannot be written raises :class:`UserInputError` first."""
    check_output_dir(output_dir)
    if args.image_size is None:
        args = dataclasses.replace(args, image_size=data.native_image_size())
    with thread_independent() if args.single_thread else contextlib.nullcontext():
        return _train(data, args, output_dir)


def _train(
    data: ImageClassificationData, args: PretrainArguments, output_dir: str | os.PathLike
) -> tuple[StructGuardForImageClassification, dict]:
    """The body of :func:`pretrain_classifier` (``args.image_size`` set)."""
    torch.manual_seed(args.seed)
    model = build_model(
        args.backbone,
        num_labels=data.num_classes,
        class_names=data.class_names,
        image_size=args.image_size,
        cifar_stem=args.cifar_stem,
        pretrained=False,
    )
    train_images, train_labels = data.tensors("train", None, args.image_size)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        optim="sgd",
        optim_args="momentum=0.9,nesterov=True",
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_ratio,
        label_smoothing_factor=args.label_smoothing,
        save_strategy="no",
        logging_strategy="epoch",
        report_to=[],
        seed=args.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not args.progress_bar,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=_AugmentedImages(train_images, train_labels, args))
    trainer.train()
    metrics = {}
    for split in ("train", "test"):
        images, labels = data.tensors(split, None, args.image_size)
        metrics[f"{split}_accuracy"] = accuracy(predict(model, images)[0], labels)
    metrics.update(epochs=args.epochs, recipe=dataclasses.asdict(args))
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
        Path(output_dir, "train_result.json").write_text(json.dumps(metrics, indent=2))
    return model, metrics
