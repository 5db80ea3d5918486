"""Tests for hf_structguard.data: loading, column detection, tensors, digits default, forget sets."""

import hashlib
import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from hf_structguard.data import (
    ForgetSet,
    ImageClassificationData,
    images_to_tensor,
    load_digits_dataset,
    load_image_data,
    select_forget_set,
)

NAMES = ["cat", "dog", "frog"]


def _image(value: int, mode: str = "RGB", size: int = 6) -> PILImage.Image:
    color = {"L": value, "RGB": (value, value, value), "RGBA": (value, value, value, 255)}[mode]
    return PILImage.new(mode, (size, size), color)


def _split(labels, image_column="img", label_column="label", label_feature=None, mode="RGB") -> Dataset:
    features = Features({image_column: Image(), label_column: label_feature or ClassLabel(names=NAMES)})
    images = [_image(40 * i % 256, mode) for i in range(len(labels))]
    return Dataset.from_dict({image_column: images, label_column: list(labels)}, features=features)


def _dataset_dict(**kwargs) -> DatasetDict:
    return DatasetDict(train=_split([0, 1, 2, 0, 1, 2], **kwargs), test=_split([2, 1, 0], **kwargs))


@pytest.fixture(scope="module")
def digits() -> ImageClassificationData:
    return load_image_data()


# ---------------------------------------------------------------- loading and column detection


@pytest.mark.parametrize(
    "image_column, label_column", [("img", "label"), ("image", "labels"), ("image", "fine_label"), ("img", "labels")]
)
def test_detects_standard_columns(image_column, label_column):
    data = load_image_data(_dataset_dict(image_column=image_column, label_column=label_column))
    assert (data.image_column, data.label_column) == (image_column, label_column)
    assert data.class_names == NAMES and data.num_classes == 3
    assert len(data.train) == 6 and len(data.test) == 3


def test_fine_label_preferred_over_coarse_label():
    def split(n):
        features = Features(
            {"img": Image(), "coarse_label": ClassLabel(names=["a", "b"]), "fine_label": ClassLabel(names=NAMES)}
        )
        return Dataset.from_dict(
            {"img": [_image(0)] * n, "coarse_label": [0] * n, "fine_label": [1] * n}, features=features
        )

    data = load_image_data(DatasetDict(train=split(3), test=split(2)))
    assert data.label_column == "fine_label" and data.class_names == NAMES
    assert data.train.column_names == ["img", "fine_label"]


def test_detects_single_typed_columns_and_takes_names():
    data = load_image_data(_dataset_dict(image_column="photo", label_column="target"))
    assert (data.image_column, data.label_column) == ("photo", "target")
    data = load_image_data(
        _dataset_dict(image_column="photo", label_column="target"), image_column="photo", label_column="target"
    )
    assert data.label_column == "target"


def test_undetectable_or_missing_columns_raise():
    def split():
        features = Features({"a": Image(), "b": Image(), "label": ClassLabel(names=NAMES)})
        return Dataset.from_dict({"a": [_image(0)], "b": [_image(1)], "label": [0]}, features=features)

    with pytest.raises(ValueError, match=r"image column.*a \(Image\), b \(Image\).*image_column="):
        load_image_data(DatasetDict(train=split(), test=split()))
    with pytest.raises(ValueError, match="label column 'nope' not found; columns: img"):
        load_image_data(_dataset_dict(), label_column="nope")
    with pytest.raises(ValueError, match="not a datasets.Image column"):
        load_image_data(_dataset_dict(), image_column="label")


def test_missing_splits_raise_and_test_split_none_holds_out():
    dataset_dict = _dataset_dict()
    with pytest.raises(ValueError, match=r"train split 'training' not found; available splits: \['train', 'test'\]"):
        load_image_data(dataset_dict, train_split="training")
    with pytest.raises(ValueError, match="test split 'validation' not found.*test_split=None"):
        load_image_data(dataset_dict, test_split="validation")
    train_only = DatasetDict(train=_split([0, 1, 2] * 4))
    with pytest.raises(ValueError, match="test split 'test' not found"):
        load_image_data(train_only)
    data = load_image_data(train_only, test_split=None, test_size=3, split_seed=1)
    assert len(data.train) == 9 and len(data.test) == 3
    assert sorted(data.labels("test").tolist()) == [0, 1, 2]  # stratified
    again = load_image_data(train_only, test_split=None, test_size=3, split_seed=1)
    assert data.labels("train").tolist() == again.labels("train").tolist()
    assert "seed 1" in data.source
    with pytest.raises(ValueError, match="test_size"):
        load_image_data(train_only, test_split=None, test_size=1.5)


def test_label_column_without_classlabel_needs_class_names():
    plain = _dataset_dict(label_feature=Value("int64"))
    with pytest.raises(ValueError, match="not a ClassLabel.*class_names"):
        load_image_data(plain)
    data = load_image_data(plain, class_names=NAMES)
    assert data.class_names == NAMES and isinstance(data.train.features["label"], ClassLabel)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        load_image_data(plain, class_names=["a", "b"])
    strings = DatasetDict(
        train=_split(["dog", "cat"], label_feature=Value("string")),
        test=_split(["frog"], label_feature=Value("string")),
    )
    data = load_image_data(strings, class_names=NAMES)
    assert data.labels("train").tolist() == [1, 0] and data.labels("test").tolist() == [2]
    with pytest.raises(ValueError, match="not in class_names"):
        load_image_data(strings, class_names=["cat", "dog"])


def test_bad_labels_and_class_names_raise():
    unlabelled = DatasetDict(train=_split([0, 1]), test=_split([-1, -1]))
    with pytest.raises(ValueError, match="split 'test' has labels.*unlabelled"):
        load_image_data(unlabelled)
    with pytest.raises(ValueError, match="class_names has 2 names but the ClassLabel"):
        load_image_data(_dataset_dict(), class_names=["a", "b"])
    assert load_image_data(_dataset_dict(), class_names=["A", "B", "C"]).class_names == ["A", "B", "C"]
    with pytest.raises(ValueError, match="split= is not supported"):
        load_image_data("some/dataset", split="train")
    with pytest.raises(ValueError, match="without a dataset path"):
        load_image_data(None, name="plain_text")


def test_loads_local_parquet_folder(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    _split([0, 1, 2, 1], image_column="img").to_parquet(folder / "train.parquet")
    _split([2, 0], image_column="img").to_parquet(folder / "test.parquet")
    data = load_image_data(folder, cache_dir=str(tmp_path / "cache"))
    assert data.class_names == NAMES and len(data.train) == 4 and len(data.test) == 2
    assert str(folder) in data.source and "cache_dir" in data.source
    images, labels = data.tensors("test", None, 8)
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [2, 0]


def test_loads_local_imagefolder_with_grey_and_rgba(tmp_path):
    root = tmp_path / "folder"
    for split, names in (("train", ["ant", "bee"]), ("test", ["ant", "bee"])):
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            _image(60 + 100 * label, "L").save(root / split / name / "a.png")
            _image(60 + 100 * label, "RGBA").save(root / split / name / "b.png")
    data = load_image_data(str(root), cache_dir=str(tmp_path / "cache"))
    assert (data.image_column, data.label_column) == ("image", "label")
    assert data.class_names == ["ant", "bee"]
    images, labels = data.tensors("train", None, 4)
    assert images.shape == (4, 3, 4, 4)
    for image, label in zip(images, labels, strict=True):
        assert torch.allclose(image, torch.full_like(image, (60 + 100 * label.item()) / 255))


# ---------------------------------------------------------------- tensors


def test_images_to_tensor_converts_modes_and_resizes():
    rgba = PILImage.new("RGBA", (5, 5), (10, 20, 30, 40))
    grey = PILImage.new("L", (8, 8), 128)
    palette = PILImage.new("RGB", (5, 5), (200, 100, 0)).convert("P")
    out = images_to_tensor([rgba, grey, palette], 5)
    assert out.shape == (3, 3, 5, 5) and out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)
    assert torch.allclose(out[1], torch.full((3, 5, 5), 128 / 255))
    assert torch.allclose(out[2, :, 2, 2], torch.tensor([200, 100, 0]) / 255, atol=0.1)
    assert images_to_tensor([], 7).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match="image_size"):
        images_to_tensor([grey], 0)


def test_tensors_shape_range_order_and_errors():
    data = load_image_data(_dataset_dict(mode="L"))
    images, labels = data.tensors("train", [4, 0, 2], 12)
    assert images.shape == (3, 3, 12, 12) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 0, 2]
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert torch.allclose(images[0], torch.full_like(images[0], 160 / 255))
    assert data.tensors("test", [], 4)[0].shape == (0, 3, 4, 4)
    assert data.labels("train").dtype == np.int64
    with pytest.raises(ValueError, match=r"outside the train split \(rows 0\.\.5\)"):
        data.tensors("train", [1, 6], 4)
    with pytest.raises(ValueError, match="outside"):
        data.tensors("train", [-1], 4)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.tensors("validation", None, 4)
    with pytest.raises(ValueError, match="image_size"):
        data.tensors("train", None, 2.5)


# ---------------------------------------------------------------- digits default


def test_digits_default(digits):
    assert digits.class_names == [str(i) for i in range(10)]
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    assert (digits.image_column, digits.label_column) == ("image", "label")
    assert "load_digits" in digits.source
    image = digits.train[0]["image"]
    assert image.mode == "L" and image.size == (8, 8)
    assert np.bincount(digits.labels("test")).min() >= 35  # stratified: about 36 per class
    images, labels = digits.tensors("test", range(5), 32)
    assert images.shape == (5, 3, 32, 32) and labels.shape == (5,)
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9


def test_digits_split_is_seeded():
    first, second = load_digits_dataset(seed=3), load_digits_dataset(seed=3)
    assert first["train"]["label"][:] == second["train"]["label"][:]
    assert load_digits_dataset(test_size=0.5)["test"].num_rows == 899
    features = first["train"].features
    assert isinstance(features["image"], Image) and features["label"].names == [str(i) for i in range(10)]


# ---------------------------------------------------------------- forget sets


def test_random_forget_sets_nested_and_seeded():
    small, large = select_forget_set(1000, k=16, seed=5), select_forget_set(1000, k=128, seed=5)
    assert large.indices[:16] == small.indices
    assert (small.mode, small.seed, small.k) == ("random", 5, 16)
    assert select_forget_set(1000, k=16, seed=5) == small
    assert select_forget_set(1000, k=16, seed=6).indices != small.indices
    assert small.indices == np.random.default_rng(5).permutation(1000)[:16].tolist()
    assert select_forget_set(10, k=10).k == 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 11}, r"k=11 is larger than the train split \(10 rows\)"),
        ({"k": 0}, "empty forget set"),
        ({"k": True}, "k must be an integer"),
        ({"k": 3, "seed": -1}, "seed must be a non-negative integer"),
        ({"indices": [1, 10]}, r"\[10\] are outside the train split \(rows 0\.\.9\)"),
        ({"indices": [-2, 1]}, "non-negative"),
        ({"indices": [1, 2, 1]}, r"duplicates: \[1\]"),
        ({"indices": []}, "empty"),
        ({"indices": [1.5]}, "must be integers"),
        ({"indices": "12"}, "sequence of integers"),
        ({}, "exactly one of"),
        ({"k": 2, "indices": [1]}, r"exactly one of.*\['k', 'indices'\]"),
    ],
)
def test_bad_forget_sets_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_forget_set(10, **kwargs)


def test_explicit_indices_and_files(tmp_path):
    forget_set = select_forget_set(10, indices=np.array([7, 2, 5]))
    assert forget_set.indices == [7, 2, 5] and forget_set.mode == "ids" and forget_set.seed is None
    json_file = tmp_path / "ids.json"
    json_file.write_text("[3, 1]")
    assert select_forget_set(10, indices_file=json_file).indices == [3, 1]
    text_file = tmp_path / "ids.txt"
    text_file.write_text("# forget these\n4\n\n 9  # last one\n")
    assert select_forget_set(10, indices_file=str(text_file)).indices == [4, 9]
    saved = tmp_path / "forget_set.json"
    select_forget_set(10, k=4, seed=1).to_json(saved)
    assert select_forget_set(10, indices_file=saved).indices == select_forget_set(10, k=4, seed=1).indices
    text_file.write_text("4\nfive\n")
    with pytest.raises(ValueError, match=r"ids.txt:2: expected one integer per line, got 'five'"):
        select_forget_set(10, indices_file=text_file)
    text_file.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty in"):
        select_forget_set(10, indices_file=text_file)
    json_file.write_text("[1, 20]")
    with pytest.raises(ValueError, match="outside"):
        select_forget_set(10, indices_file=json_file)
    json_file.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="JSON list of integers"):
        select_forget_set(10, indices_file=json_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        select_forget_set(10, indices_file=tmp_path / "missing.txt")


def test_class_forget_sets():
    labels = np.array([0, 1, 2, 1, 0, 1])
    by_id = select_forget_set(6, classes=[1], train_labels=labels)
    assert by_id.indices == [1, 3, 5] and by_id.mode == "classes" and by_id.classes == [1]
    by_name = select_forget_set(6, classes=["cat", "frog"], train_labels=labels, class_names=NAMES)
    assert by_name.indices == [0, 2, 4] and by_name.classes == [0, 2]
    assert select_forget_set(6, classes="dog", train_labels=labels, class_names=NAMES).indices == [1, 3, 5]
    with pytest.raises(ValueError, match="unknown class name 'cow'; classes: \\['cat', 'dog', 'frog'\\]"):
        select_forget_set(6, classes=["cow"], train_labels=labels, class_names=NAMES)
    with pytest.raises(ValueError, match="class_names is needed"):
        select_forget_set(6, classes=["cat"], train_labels=labels)
    with pytest.raises(ValueError, match=r"class id 3 is outside 0\.\.2"):
        select_forget_set(6, classes=[3], train_labels=labels, class_names=NAMES)
    with pytest.raises(ValueError, match="more than once"):
        select_forget_set(6, classes=[1, "dog"], train_labels=labels, class_names=NAMES)
    with pytest.raises(ValueError, match="needs train_labels"):
        select_forget_set(6, classes=[1])
    with pytest.raises(ValueError, match=r"classes \[3\] have no rows"):
        select_forget_set(6, classes=[3], train_labels=labels, class_names=NAMES + ["owl"])
    with pytest.raises(ValueError, match="shape"):
        select_forget_set(5, classes=[1], train_labels=labels)


def test_class_forget_set_from_data(digits):
    forget_set = digits.select_forget_set(classes=["3"])
    labels = digits.labels("train")
    assert forget_set.indices == np.flatnonzero(labels == 3).tolist()
    _, forget_labels = digits.tensors("train", forget_set.indices, 8)
    assert set(forget_labels.tolist()) == {3}
    assert digits.select_forget_set(k=16, seed=0).indices == select_forget_set(len(digits.train), k=16).indices


def test_retain_is_train_minus_forget():
    forget_set = select_forget_set(50, k=7, seed=2)
    retain = forget_set.retain_indices(50)
    assert retain.dtype == np.int64 and len(retain) == 43
    assert not set(retain.tolist()) & set(forget_set.indices)
    assert sorted(retain.tolist() + forget_set.indices) == list(range(50))
    with pytest.raises(ValueError, match="outside"):
        forget_set.retain_indices(10)


def test_fingerprint_salt_and_order():
    forward, backward = ForgetSet([3, 1, 20], mode="ids"), ForgetSet([20, 3, 1], mode="ids")
    assert forward.fingerprint() == backward.fingerprint()
    assert forward.fingerprint("salt") == backward.fingerprint("salt") != forward.fingerprint()
    assert forward.fingerprint("a") != forward.fingerprint("b")
    assert len(forward.fingerprint()) == 64
    assert forward.fingerprint("s") == hashlib.sha256(b"s1,3,20").hexdigest()
    assert ForgetSet([1, 2], mode="ids").fingerprint() != ForgetSet([1, 3], mode="ids").fingerprint()


def test_forget_set_json_round_trip(tmp_path):
    path = tmp_path / "forget_set.json"
    for forget_set in (
        select_forget_set(30, k=5, seed=9),
        select_forget_set(4, classes=[1], train_labels=[0, 1, 1, 0]),
    ):
        text = forget_set.to_json(path)
        assert json.loads(text)["k"] == forget_set.k
        assert ForgetSet.from_json(path) == forget_set
    path.write_text('{"indices": [1, 2], "mode": "ids", "k": 3}')
    with pytest.raises(ValueError, match="k=3 but lists 2"):
        ForgetSet.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a forget-set file"):
        ForgetSet.from_json(path)
    with pytest.raises(ValueError, match="mode must be one of"):
        ForgetSet([1], mode="some")
    with pytest.raises(ValueError, match="at least one"):
        ForgetSet([], mode="ids")
