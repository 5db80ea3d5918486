"""Files the benchmark scripts write: atomically (a reader never sees half a file), and a result as a pair
``<output>.json`` (everything) + ``<output>.md`` (the table for people)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, content: dict) -> None:
    write_atomic(path, json.dumps(content, indent=1, default=str))


def write_result(output: str | os.PathLike, content: dict, markdown: str) -> None:
    """``<output>.json`` from ``content`` and ``<output>.md`` from ``markdown`` (also printed)."""
    output = Path(output)
    write_json_atomic(output.with_suffix(".json"), content)
    write_atomic(output.with_suffix(".md"), markdown)
    print(markdown)
