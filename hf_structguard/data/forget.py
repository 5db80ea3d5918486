"""Forget sets: which training rows to unlearn (random k, explicit ids, or whole classes)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORGET_MODES = ("random", "ids", "classes")


def write_private_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600), atomically (a temporary file, then
    a rename): the forgotten ids, the receipt salt and the per-request ids are never world-readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)  # an existing temporary file keeps its mode through os.open
    os.replace(tmp, path)
    return path


@dataclass
class ForgetSet:
    """Train-split row indices to forget, in selection order, and how they were chosen."""

    indices: list[int]
    mode: str
    seed: int | None = None
    classes: list[int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in FORGET_MODES:
            raise ValueError(f"mode must be one of {FORGET_MODES}, got {self.mode!r}")
        self.indices = _as_int_list(self.indices, "forget indices")
        if not self.indices:
            raise ValueError("a forget set needs at least one train row index")
        _check_unique_nonnegative(self.indices)

    @property
    def k(self) -> int:
        return len(self.indices)

    def fingerprint(self, salt: str = "") -> str:
        """sha256 hex digest of ``salt`` followed by the comma-joined sorted indices (order-independent)."""
        text = salt + ",".join(str(i) for i in sorted(self.indices))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def retain_indices(self, num_train: int) -> np.ndarray:
        """Train rows not in the forget set (ascending int64), used only for evaluation."""
        _check_range(self.indices, num_train)
        return np.setdiff1d(np.arange(num_train, dtype=np.int64), np.asarray(self.indices, dtype=np.int64))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of the forget set; also written to ``path`` when given (a private, local file)."""
        text = json.dumps(
            {"indices": self.indices, "mode": self.mode, "seed": self.seed, "classes": self.classes, "k": self.k}
        )
        if path is not None:
            write_private_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ForgetSet:
        """Read a file written by ``to_json``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "indices" not in data or "mode" not in data:
            raise ValueError(f"{path} is not a forget-set file: expected a JSON object with 'indices' and 'mode'")
        forget_set = cls(indices=data["indices"], mode=data["mode"], seed=data.get("seed"), classes=data.get("classes"))
        if "k" in data and data["k"] != forget_set.k:
            raise ValueError(f"{path} says k={data['k']} but lists {forget_set.k} indices")
        return forget_set


def select_forget_set(
    num_train: int,
    *,
    k: int | None = None,
    seed: int = 0,
    indices: Sequence[int] | None = None,
    indices_file: str | os.PathLike | None = None,
    classes: int | str | Sequence[int | str] | None = None,
    train_labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> ForgetSet:
    """Choose the forget set; exactly one of ``k``, ``indices``, ``indices_file`` or ``classes``.

    - ``k``: the first k rows of ``np.random.default_rng(seed).permutation(num_train)`` (so sets are nested
      across k for one seed).
    - ``indices``: explicit train row indices; ``indices_file``: a JSON list (or a ``to_json`` file) or a text
      file with one integer per line (``#`` starts a comment).
    - ``classes``: class ids or names (names need ``class_names``): every train row of those classes
      (class-level unlearning); needs ``train_labels``.
    Bad input (out of range, duplicates, empty, k > num_train, ...) raises ValueError before any work.
    """
    if isinstance(num_train, bool) or not isinstance(num_train, (int, np.integer)) or num_train <= 0:
        raise ValueError(f"num_train must be a positive integer, got {num_train!r}")
    given = [
        name
        for name, value in (("k", k), ("indices", indices), ("indices_file", indices_file), ("classes", classes))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(f"give exactly one of k, indices, indices_file or classes (got {given or 'none'})")

    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"k must be an integer, got {k!r}")
        if k <= 0:
            raise ValueError(f"k must be at least 1, got {k}: an empty forget set has nothing to unlearn")
        if k > num_train:
            raise ValueError(f"k={k} is larger than the train split ({num_train} rows)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        order = np.random.default_rng(int(seed)).permutation(num_train)
        return ForgetSet(indices=order[: int(k)].tolist(), mode="random", seed=int(seed))

    if classes is not None:
        return _class_forget_set(num_train, classes, train_labels, class_names)

    if indices_file is not None:
        ids = read_indices_file(indices_file)
        where = f" in {indices_file}"
    else:
        ids = _as_int_list(indices, "indices")
        where = ""
    if not ids:
        raise ValueError(f"the forget set is empty{where}: give at least one train row index")
    _check_unique_nonnegative(ids)
    _check_range(ids, num_train)
    return ForgetSet(indices=ids, mode="ids")


def read_indices_file(path: str | os.PathLike) -> list[int]:
    """Integers from a JSON list / forget-set JSON object, or from a text file with one integer per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"forget indices file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} looks like JSON but does not parse: {error}") from error
        if isinstance(data, dict) and "indices" in data:
            data = data["indices"]
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list of integers or an object with an 'indices' list")
        return _as_int_list(data, f"indices in {path}")
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            values.append(int(line))
        except ValueError:
            raise ValueError(f"{path}:{number}: expected one integer per line, got {line!r}") from None
    return values


def _class_forget_set(
    num_train: int,
    classes: int | str | Sequence[int | str],
    train_labels: Sequence[int] | np.ndarray | None,
    class_names: Sequence[str] | None,
) -> ForgetSet:
    if train_labels is None:
        raise ValueError("classes= needs train_labels (the label of every train row)")
    labels = np.asarray(train_labels)
    if labels.shape != (num_train,):
        raise ValueError(f"train_labels has shape {labels.shape}, expected ({num_train},)")
    requested = [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)
    if not requested:
        raise ValueError("classes is empty: name at least one class to forget")
    names = [str(name) for name in class_names] if class_names is not None else None
    num_classes = len(names) if names is not None else int(labels.max()) + 1
    ids = []
    for item in requested:
        if isinstance(item, str):
            if names is None:
                raise ValueError(f"class {item!r} is a name, so class_names is needed to map it to an id")
            if item not in names:
                raise ValueError(f"unknown class name {item!r}; classes: {names}")
            ids.append(names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < num_classes:
                raise ValueError(f"class id {item} is outside 0..{num_classes - 1}")
            ids.append(int(item))
        else:
            raise ValueError(f"classes must be class ids or names, got {item!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes {requested} name the same class more than once")
    empty = [c for c in ids if not np.any(labels == c)]
    if empty:
        raise ValueError(f"classes {empty} have no rows in the train split")
    rows = np.flatnonzero(np.isin(labels, ids))
    return ForgetSet(indices=rows.tolist(), mode="classes", classes=ids)


def _as_int_list(values, what: str) -> list[int]:
    if values is None or isinstance(values, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of integers, got {values!r}")
    out = []
    for value in values.tolist() if isinstance(values, np.ndarray) else values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{what} must be integers, got {value!r}")
        out.append(int(value))
    return out


def _check_unique_nonnegative(ids: list[int]) -> None:
    negative = [i for i in ids if i < 0]
    if negative:
        raise ValueError(f"forget indices must be non-negative row numbers, got {negative[:5]}")
    if len(set(ids)) != len(ids):
        seen, duplicates = set(), []
        for i in ids:
            if i in seen and i not in duplicates:
                duplicates.append(i)
            seen.add(i)
        raise ValueError(f"forget indices contain duplicates: {duplicates[:5]}")


def _check_range(ids: list[int], num_train: int) -> None:
    outside = [i for i in ids if i >= num_train]
    if outside:
        raise ValueError(f"forget indices {outside[:5]} are outside the train split (rows 0..{num_train - 1})")
