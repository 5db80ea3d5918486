"""Load an image-classification dataset (Hub id, local folder, in-memory ``DatasetDict`` or the digits default)
and turn its images into float RGB tensors in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image, load_dataset
from PIL import Image as PILImage

from .digits import load_digits_dataset
from .forget import ForgetSet, select_forget_set

IMAGE_COLUMN_CANDIDATES = ("img", "image")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label")
_DECODE_CHUNK = 1024


def images_to_tensor(images: Sequence[PILImage.Image], image_size: int) -> torch.Tensor:
    """Convert PIL images (any mode: grey, RGBA, palette, ...) to a float32 (N, 3, S, S) RGB tensor in [0, 1].

    Images whose size is not ``image_size`` x ``image_size`` are resized with PIL's bilinear filter
    (antialiased when shrinking). RGBA images lose their alpha channel.
    """
    size = _check_image_size(image_size)
    arrays = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), PILImage.Resampling.BILINEAR)
        arrays[i] = np.asarray(image)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


@dataclass
class ImageClassificationData:
    """Train and test splits of an image-classification dataset with its image/label columns and class names."""

    train: Dataset
    test: Dataset
    image_column: str
    label_column: str
    class_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def native_image_size(self) -> int:
        """The side of the data's own images: the larger side of the first training image."""
        return max(self.train[0][self.image_column].size)

    def split(self, split: str) -> Dataset:
        """The ``"train"`` or ``"test"`` dataset."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test

    def labels(self, split: str) -> np.ndarray:
        """All labels of a split as an int64 array (no image is decoded)."""
        dataset = self.split(split)
        return _label_array(dataset, self.label_column)

    def tensors(self, split: str, indices: Sequence[int] | None, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 3, image_size, image_size) float32 in [0, 1] RGB and int64 labels (N,).

        ``indices`` are row indices of the split, in the order wanted (``None``: every row).
        """
        dataset = self.split(split)
        size = _check_image_size(image_size)
        if indices is not None:
            dataset = dataset.select(_check_indices(indices, len(dataset), split))
        labels = torch.from_numpy(_label_array(dataset, self.label_column))
        images = torch.empty((len(dataset), 3, size, size), dtype=torch.float32)
        for start in range(0, len(dataset), _DECODE_CHUNK):
            batch = dataset[start : start + _DECODE_CHUNK][self.image_column]
            images[start : start + len(batch)] = images_to_tensor(batch, size)
        return images, labels

    def select_forget_set(self, **kwargs) -> ForgetSet:
        """``select_forget_set`` on this dataset's train split (labels and class names filled in)."""
        return select_forget_set(
            len(self.train), train_labels=self.labels("train"), class_names=self.class_names, **kwargs
        )


def load_image_data(
    path_or_name: str | os.PathLike | DatasetDict | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    test_split: str | None = "test",
    class_names: Sequence[str] | None = None,
    test_size: float | int = 0.2,
    split_seed: int = 0,
    **load_dataset_kwargs,
) -> ImageClassificationData:
    """Load an image-classification dataset.

    ``path_or_name``: ``None`` for the embedded digits default (``load_digits_dataset(test_size, split_seed)``),
    a Hub id or local folder passed to ``datasets.load_dataset`` together with ``load_dataset_kwargs``
    (``name=``, ``data_dir=``, ``revision=``, ...), or a ``DatasetDict`` already in memory.

    Columns are detected (image: ``img``/``image`` or the only ``Image`` column; label:
    ``label``/``labels``/``fine_label`` or the only ``ClassLabel`` column) unless named. Class names come
    from the ``ClassLabel``; a plain integer or string label column needs ``class_names`` (it is then cast to a
    ``ClassLabel``). Only the image and label columns are kept.

    ``test_split=None``: the source has no test split; a stratified ``test_size`` share (fraction, or a
    row count) of ``train_split`` is held out with seed ``split_seed``, and ``train`` is the remainder
    (train row indices then refer to that remainder).
    """
    dataset_dict, source = _read_source(path_or_name, test_size, split_seed, load_dataset_kwargs)
    _check_splits(dataset_dict, train_split, test_split)
    train = dataset_dict[train_split]
    image_column = _pick_column(train, image_column, IMAGE_COLUMN_CANDIDATES, Image, "image")
    label_column = _pick_column(train, label_column, LABEL_COLUMN_CANDIDATES, ClassLabel, "label")
    if not isinstance(train.features[image_column], Image):
        raise ValueError(
            f"column {image_column!r} is {train.features[image_column]}, not a datasets.Image column; "
            f"columns: {_describe_columns(train)}"
        )
    splits = {"train": train}
    if test_split is not None:
        test = dataset_dict[test_split]
        missing = [c for c in (image_column, label_column) if c not in test.column_names]
        if missing:
            raise ValueError(f"test split {test_split!r} lacks columns {missing}; it has {_describe_columns(test)}")
        splits["test"] = test
    else:
        _check_test_size(test_size, len(train))
    splits = {name: ds.select_columns([image_column, label_column]) for name, ds in splits.items()}
    names, splits = _resolve_labels(splits, label_column, class_names)

    if test_split is None:
        held_out = splits["train"].train_test_split(
            test_size=test_size, seed=split_seed, stratify_by_column=label_column, keep_in_memory=True
        )
        splits = {"train": held_out["train"], "test": held_out["test"]}
        source += f" [test: {test_size} of {train_split!r}, stratified, seed {split_seed}]"
    return ImageClassificationData(
        train=splits["train"],
        test=splits["test"],
        image_column=image_column,
        label_column=label_column,
        class_names=names,
        source=source,
    )


def _read_source(
    path_or_name: str | os.PathLike | DatasetDict | None, test_size: float | int, split_seed: int, load_dataset_kwargs: dict
) -> tuple[DatasetDict, str]:
    """The dataset :func:`load_image_data` names (digits default, in-memory, or ``load_dataset``) and a string
    saying where it came from."""
    if path_or_name is None:
        if load_dataset_kwargs:
            raise ValueError(
                f"load_dataset arguments {sorted(load_dataset_kwargs)} were given without a dataset path or name; "
                "the digits default takes only test_size and split_seed"
            )
        return (load_digits_dataset(test_size=test_size, seed=split_seed),
                f"sklearn.datasets.load_digits (test_size={test_size}, seed={split_seed})")
    if isinstance(path_or_name, DatasetDict):
        return path_or_name, "in-memory DatasetDict"
    for key in ("split", "streaming"):
        if key in load_dataset_kwargs:
            raise ValueError(f"{key}= is not supported here: use train_split=/test_split= to choose the splits")
    path = os.fspath(path_or_name)
    extra = ", ".join(f"{key}={value!r}" for key, value in sorted(load_dataset_kwargs.items()))
    return load_dataset(path, **load_dataset_kwargs), f"{path} ({extra})" if extra else path


def _check_splits(dataset_dict, train_split: str, test_split: str | None) -> None:
    """ValueError unless ``dataset_dict`` is a ``DatasetDict`` holding the named, distinct splits."""
    if not isinstance(dataset_dict, DatasetDict):
        raise ValueError(f"expected a DatasetDict with named splits, got {type(dataset_dict).__name__}")
    available = list(dataset_dict)
    if train_split not in dataset_dict:
        raise ValueError(f"train split {train_split!r} not found; available splits: {available}")
    if test_split is not None and test_split not in dataset_dict:
        raise ValueError(
            f"test split {test_split!r} not found; available splits: {available}. Pass test_split=NAME, or "
            "test_split=None to hold out test_size of the train split"
        )
    if test_split is not None and test_split == train_split:
        raise ValueError(f"train_split and test_split are both {train_split!r}; use test_split=None to split it")


def _label_array(dataset: Dataset, label_column: str) -> np.ndarray:
    """A label column as int64 numpy, read straight from Arrow (no image decoding, no per-row formatting)."""
    column = dataset.select_columns([label_column]).with_format("numpy")[:][label_column]
    return np.asarray(column, dtype=np.int64)


def _describe_columns(dataset: Dataset) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in dataset.features.items())


def _pick_column(
    dataset: Dataset, given: str | None, candidates: tuple[str, ...], feature_type: type, kind: str
) -> str:
    if given is not None:
        if given not in dataset.column_names:
            raise ValueError(f"{kind} column {given!r} not found; columns: {_describe_columns(dataset)}")
        return given
    for name in candidates:
        if name in dataset.column_names:
            return name
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, feature_type)]
    if len(typed) == 1:
        return typed[0]
    raise ValueError(
        f"cannot detect the {kind} column (looked for {list(candidates)} or a single {feature_type.__name__} "
        f"column); columns: {_describe_columns(dataset)}. Pass {kind}_column=NAME"
    )


def _resolve_labels(
    splits: dict[str, Dataset], label_column: str, class_names: Sequence[str] | None
) -> tuple[list[str], dict[str, Dataset]]:
    """Class names, and splits whose label column is a ClassLabel with ids in range."""
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be a non-empty list of distinct names, got {class_names}")
    feature = splits["train"].features[label_column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        for name, ds in splits.items():
            other = ds.features[label_column]
            if not isinstance(other, ClassLabel) or list(other.names) != names:
                raise ValueError(f"label column {label_column!r} of split {name!r} is {other}, but train has {feature}")
        if class_names is not None:
            if len(class_names) != len(names):
                raise ValueError(
                    f"class_names has {len(class_names)} names but the ClassLabel of {label_column!r} has "
                    f"{len(names)}: {names}"
                )
            names = class_names
        _check_label_range(splits, label_column, len(names))
    else:
        dtype = getattr(feature, "dtype", None)
        if class_names is None:
            raise ValueError(
                f"label column {label_column!r} is {feature}, not a ClassLabel, so it has no class names: "
                "pass class_names=[...] (one name per label id, in id order)"
            )
        if dtype not in ("string", "large_string") and not str(dtype).startswith(("int", "uint")):
            raise ValueError(f"label column {label_column!r} is {feature}; expected integer ids or strings")
        names = class_names
        if str(dtype).startswith(("int", "uint")):
            _check_label_range(splits, label_column, len(names))
        target = ClassLabel(names=names)
        cast = {}
        for name, ds in splits.items():
            try:
                cast[name] = ds.cast_column(label_column, target)
            except ValueError as error:
                raise ValueError(
                    f"label column {label_column!r} of split {name!r} has a label that is not in class_names "
                    f"{names}: {error}"
                ) from error
        splits = cast
    return names, splits


def _check_label_range(splits: dict[str, Dataset], label_column: str, num_classes: int) -> None:
    for name, ds in splits.items():
        if None in ds.unique(label_column):
            raise ValueError(
                f"split {name!r} has rows without a label in column {label_column!r}. An image folder needs one "
                f"sub-folder per class ({name}/cat/1.png, {name}/dog/2.png, ...), not images directly in {name}/"
            )
        labels = _label_array(ds, label_column)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"split {name!r} has labels in [{labels.min()}, {labels.max()}], outside 0..{num_classes - 1} "
                "(-1 usually marks an unlabelled split; choose a labelled one)"
            )


def _check_test_size(test_size: float | int, num_rows: int) -> None:
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
    if isinstance(test_size, int) and not 0 < test_size < num_rows:
        raise ValueError(f"test_size as a row count must be in 1..{num_rows - 1}, got {test_size}")


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


def _check_indices(indices: Sequence[int], num_rows: int, split: str) -> np.ndarray:
    array = np.asarray(indices)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D sequence of integers, got dtype {array.dtype} shape {array.shape}")
    bad = array[(array < 0) | (array >= num_rows)]
    if bad.size:
        raise ValueError(f"indices {bad[:5].tolist()} are outside the {split} split (rows 0..{num_rows - 1})")
    return array.astype(np.int64)
