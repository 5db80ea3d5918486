"""Image-classification data: loading, tensors in [0, 1], forget sets, and the embedded digits default."""

from .digits import DIGITS_CLASS_NAMES, load_digits_dataset
from .forget import ForgetSet, read_indices_file, select_forget_set
from .loading import ImageClassificationData, images_to_tensor, load_image_data

__all__ = [
    "DIGITS_CLASS_NAMES",
    "ForgetSet",
    "ImageClassificationData",
    "images_to_tensor",
    "load_digits_dataset",
    "load_image_data",
    "read_indices_file",
    "select_forget_set",
]
