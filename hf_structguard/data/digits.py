"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (real images shipped with sklearn)."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DIGITS_CLASS_NAMES = [str(i) for i in range(10)]


def load_digits_dataset(test_size: float | int = 0.2, seed: int = 0) -> DatasetDict:
    """Return sklearn's 1,797 digit images as a ``DatasetDict`` with ``train`` and ``test`` splits.

    Columns: ``image`` (8x8 greyscale PIL images, pixel values 0..16 scaled to 0..255) and ``label``
    (``ClassLabel`` with names "0".."9"). The split is stratified by class and fixed by ``seed``.
    """
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rows = np.arange(len(labels))
    train_rows, test_rows = train_test_split(rows, test_size=test_size, random_state=seed, stratify=labels)
    features = Features({"image": Image(), "label": ClassLabel(names=DIGITS_CLASS_NAMES)})

    def split(selected: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {"image": [PILImage.fromarray(pixels[i]) for i in selected], "label": labels[selected].tolist()},
            features=features,
        )

    return DatasetDict(train=split(train_rows), test=split(test_rows))
