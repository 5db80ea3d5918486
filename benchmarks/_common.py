"""What the benchmark scripts share: the command line's opening, and the files they write — atomically (a
reader never sees half a file), a result as a pair ``<output>.json`` (everything) + ``<output>.md`` (the table
for people)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path


def script_parser(doc: str) -> argparse.ArgumentParser:
    """Logging set up and a parser with ``doc`` as its help and the options every script takes: ``--dataset``
    (a folder or Hub id; empty: the embedded digits data) and ``--model_name_or_path`` (the Before model)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", required=True,
                        help="The Before model: a folder, local-dir:PATH or Hub id.")
    return parser


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
