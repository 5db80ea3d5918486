"""What the benchmark scripts share: the command line's opening, where the shared folder is, and the files they
write — atomically (a reader never sees half a file), a result as a pair ``<output>.json`` (everything) +
``<output>.md`` (the table for people)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from hf_structguard.data import ImageClassificationData
from hf_structguard.modeling import StructGuardForImageClassification
from hf_structguard.arguments import AnchorArguments, DataArguments, ModelArguments
from hf_structguard.pipeline import build_anchors, load_before_model, load_data, resolve_attributes

REPOSITORY = Path(__file__).resolve().parents[1]
#: The environment variable that says where the shared folder (Before models, datasets) is.
SHARED_ENV = "HF_STRUCTGUARD_SHARED"
#: How commands and results name the shared folder: beside the repository.
SHARED_NAME = "../shared"
#: The help's last paragraph on ``../shared`` paths, for every script that reads them (printed as written).
SHARED_HELP = f"""\
A path starting with {SHARED_NAME}/ (also after local-dir:) names the shared folder: ${SHARED_ENV}
(default: {SHARED_NAME} beside the repository). Results name paths in it as {SHARED_NAME}/..., paths in the
repository relative to it, Hub ids as given."""
_LOCAL_DIR = "local-dir:"


def shared_folder() -> Path:
    """The shared folder: ``$HF_STRUCTGUARD_SHARED``, else ``../shared`` beside the repository."""
    return Path(os.environ.get(SHARED_ENV) or REPOSITORY.parent / "shared").resolve()


def locate(source: str | None) -> str | None:
    """Where to read ``source`` (a path, ``local-dir:PATH`` or Hub id): a ``../shared/...`` path in
    :func:`shared_folder`, anything else as given."""
    if source is None:
        return None
    scheme, path = _split_scheme(source)
    if path == SHARED_NAME or path.startswith(SHARED_NAME + "/"):
        path = str(shared_folder() / path[len(SHARED_NAME):].lstrip("/"))
    return scheme + path


def recorded(source: str | None) -> str | None:
    """How a result names ``source``: a path in the shared folder as ``../shared/...``, one in the repository
    relative to it, anything else (a Hub id, a path elsewhere) as given."""
    if source is None:
        return None
    scheme, path = _split_scheme(locate(source))
    if not os.path.exists(path):
        return source
    resolved = Path(path).resolve()
    for root, name in ((shared_folder(), SHARED_NAME), (REPOSITORY, "")):
        if resolved.is_relative_to(root):
            return scheme + str(Path(name) / resolved.relative_to(root))
    return scheme + path


def _split_scheme(source: str) -> tuple[str, str]:
    return (_LOCAL_DIR, source[len(_LOCAL_DIR):]) if source.startswith(_LOCAL_DIR) else ("", source)


def described_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``doc`` as its help, example commands kept line by line, and :data:`SHARED_HELP` last."""
    return argparse.ArgumentParser(description=doc, epilog=SHARED_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def script_parser(doc: str) -> argparse.ArgumentParser:
    """Logging set up and a :func:`described_parser` with the options every script takes: ``--dataset`` (a
    folder or Hub id; empty: the embedded digits data) and ``--model_name_or_path`` (the Before model)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = described_parser(doc)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", required=True,
                        help="The Before model: a folder, local-dir:PATH or Hub id.")
    return parser


def load_before(args: argparse.Namespace) -> tuple[ImageClassificationData, StructGuardForImageClassification, dict]:
    """The data of ``args.dataset``, the Before model of ``args.model_name_or_path`` (in eval mode) and how a
    result names the two (``{"model", "dataset"}``, :func:`recorded`)."""
    data = load_data(DataArguments(dataset=locate(args.dataset)))
    before, _ = load_before_model(data, ModelArguments(model_name_or_path=locate(args.model_name_or_path)))
    return data, before.eval(), {"model": recorded(args.model_name_or_path), "dataset": recorded(args.dataset)}


def attribute_anchors(data: ImageClassificationData, text_encoder: str | None = None):
    """The anchor set a run builds for ``data`` from its attribute file (``text_encoder``: None = the run's default)."""
    anchor_args = AnchorArguments(text_encoder=text_encoder)
    return build_anchors(data, anchor_args, resolve_attributes(data, anchor_args))


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
