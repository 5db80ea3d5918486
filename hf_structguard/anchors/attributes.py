"""Class attribute files: a JSON object mapping each class name to a list of short visual attributes.

Sources accepted by :func:`load_attributes`:

* a local path, e.g. ``"attrs/cifar10.json"``;
* a file shipped with the package: ``"shipped:cifar10"``, ``"shipped:cifar100"``, ``"shipped:digits"``, ``"shipped:fashion_mnist"``;
* a file in a Hub repository: ``"hf://datasets/owner/name/path/file.json"`` (dataset repo),
  ``"hf://spaces/owner/name/file.json"`` (Space), ``"hf://owner/name/file.json"`` or
  ``"hf://models/owner/name/file.json"`` (model repo); pin a revision with ``owner/name@revision``.
  Equivalently pass ``repo_id=``, ``filename=`` and ``repo_type=`` (then ``source`` is omitted);
* an already loaded ``dict``.

Class names are matched forgivingly (:func:`normalize_class_name`): case is ignored, ``_`` counts as a
space, surrounding whitespace and repeated inner whitespace are ignored. So ``"Aquarium Fish"`` in a file
matches the dataset's ``"aquarium_fish"``; ``"maple-tree"`` does not match ``"maple_tree"``.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

SHIPPED = ("cifar10", "cifar100", "digits", "fashion_mnist")


def normalize_class_name(name: str) -> str:
    """The key used to match class names: casefolded, ``_`` read as a space, whitespace collapsed."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def shipped_attributes(name: str) -> Path:
    """Path of an attribute file shipped with the package: ``"cifar10"``, ``"cifar100"``, ``"digits"`` or ``"fashion_mnist"``."""
    if name not in SHIPPED:
        raise ValueError(f"No shipped attribute file {name!r}; choose one of {list(SHIPPED)}.")
    return Path(str(resources.files("hf_structguard.anchors") / "attributes" / f"{name}.json"))


def _parse_hf_url(url: str) -> tuple[str, str, str, str | None]:
    """``hf://[datasets/|spaces/|models/]owner/name[@revision]/path`` -> (repo_id, filename, repo_type, revision)."""
    rest = url[len("hf://"):]
    repo_type = "model"
    for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space"), ("models/", "model")):
        if rest.startswith(prefix):
            rest, repo_type = rest[len(prefix):], kind
            break
    parts = rest.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"Cannot read Hub path {url!r}: expected hf://[datasets/]owner/name[@revision]/path/to/file.json."
        )
    owner, name, filename = parts
    name, _, revision = name.partition("@")
    return f"{owner}/{name}", filename, repo_type, revision or None


def resolve_attribute_source(
    source: str | Path | None = None,
    *,
    repo_id: str | None = None,
    filename: str | None = None,
    repo_type: str = "dataset",
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Path:
    """Local path of an attribute file given any of the source forms in the module docstring."""
    if (source is None) == (repo_id is None):
        raise ValueError(
            "Give either an attribute source (path, 'shipped:NAME', 'hf://...') or repo_id= and filename=."
        )
    if source is not None:
        text = str(source)
        if text.startswith("shipped:"):
            return shipped_attributes(text[len("shipped:"):])
        if not text.startswith("hf://"):
            path = Path(text)
            if not path.is_file():
                raise ValueError(
                    f"Attribute file {text!r} does not exist; give a JSON file, 'shipped:NAME' "
                    f"(one of {list(SHIPPED)}) or 'hf://datasets/owner/name/file.json'."
                )
            return path
        repo_id, filename, repo_type, url_revision = _parse_hf_url(text)
        revision = revision or url_revision
    if not filename:
        raise ValueError(f"Give filename= for the attribute file in {repo_id!r}.")
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            repo_id, filename, repo_type=repo_type, revision=revision, token=token, endpoint=endpoint
        )
    )


def check_attributes(attributes: object) -> dict[str, list[str]]:
    """Check the file format (object of non-empty lists of non-empty strings); return a clean copy.

    Attribute strings are stripped; all problems are reported together in one ``ValueError``.
    """
    if not isinstance(attributes, Mapping):
        raise ValueError(
            f"An attribute file must hold a JSON object mapping class names to lists of strings, "
            f"got {type(attributes).__name__}."
        )
    problems, clean, seen = [], {}, {}
    for name, values in attributes.items():
        if not isinstance(name, str) or not name.strip():
            problems.append(f"class name {name!r} is not a non-empty string")
            continue
        key = normalize_class_name(name)
        if key in seen:
            problems.append(f"classes {seen[key]!r} and {name!r} are the same class after name matching")
            continue
        seen[key] = name
        if not isinstance(values, (list, tuple)):
            problems.append(f"class {name!r}: expected a list of strings, got {type(values).__name__}")
            continue
        bad = [v for v in values if not isinstance(v, str)]
        if bad:
            problems.append(f"class {name!r}: non-string attributes {bad!r}")
            continue
        values = [v.strip() for v in values]
        if not values or not all(values):
            problems.append(f"class {name!r}: empty attribute list or empty attribute string")
            continue
        clean[name] = values
    if problems:
        raise ValueError("Invalid attribute file: " + "; ".join(problems) + ".")
    return clean


def match_class_names(names: Sequence[str], class_names: Sequence[str], *, what: str = "attribute file") -> list[int]:
    """For each of ``class_names`` (the dataset's), the index of its match in ``names``.

    Raises a ``ValueError`` naming missing classes (in the dataset, not in ``names``) and extra classes
    (in ``names``, not in the dataset). Matching uses :func:`normalize_class_name`; ``names`` may repeat a
    class (several anchors per class), in which case the first occurrence is returned.
    """
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        first.setdefault(normalize_class_name(name), i)
    wanted = [normalize_class_name(c) for c in class_names]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"The dataset's class names {list(class_names)} are not distinct after name matching.")
    missing = [c for c, key in zip(class_names, wanted) if key not in first]
    extra = [names[i] for key, i in first.items() if key not in set(wanted)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing classes {missing}")
        if extra:
            parts.append(f"extra classes not in the dataset {extra}")
        raise ValueError(
            f"The {what} does not match the dataset's classes: " + " and ".join(parts)
            + f". Dataset classes: {list(class_names)}."
        )
    return [first[key] for key in wanted]


def validate_attributes(
    attributes: Mapping[str, Sequence[str]], class_names: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Check an attribute mapping and, given the dataset's ``class_names``, match it to them.

    The result is keyed by the dataset's own spelling of each class, in the dataset's class order.
    """
    clean = check_attributes(attributes)
    if class_names is None:
        return clean
    names = list(clean)
    order = match_class_names(names, list(class_names))
    return {c: clean[names[i]] for c, i in zip(class_names, order)}


def load_attributes(
    source: str | Path | Mapping[str, Sequence[str]] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    repo_id: str | None = None,
    filename: str | None = None,
    repo_type: str = "dataset",
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> dict[str, list[str]]:
    """Load and validate an attribute file (see the module docstring for the source forms).

    With ``class_names`` the attributes are checked against the dataset's classes (missing, extra)
    and returned keyed by the dataset's names, in its order.
    """
    if isinstance(source, Mapping):
        return validate_attributes(source, class_names)
    path = resolve_attribute_source(
        source, repo_id=repo_id, filename=filename, repo_type=repo_type, revision=revision,
        token=token, endpoint=endpoint,
    )
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"Attribute file {str(source or filename)!r} is not valid JSON: {err}") from err
    return validate_attributes(data, class_names)


def save_attributes(attributes: Mapping[str, Sequence[str]], path: str | Path) -> Path:
    """Write an attribute mapping as pretty-printed UTF-8 JSON (after checking it)."""
    clean = check_attributes(attributes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


_WS = re.compile(r"\s+")


def describe(attributes: Sequence[str], join: str = "; ") -> str:
    """One class description from its attributes (the reference joins with ``"; "``)."""
    return join.join(_WS.sub(" ", a).strip() for a in attributes)
