"""The run's ``results.json`` (written atomically, never holding forget-sample ids) and a Markdown table."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

PRIVATE_KEYS = frozenset({"indices", "forget_indices"})


def _plain(value, where: str):
    """``value`` as plain JSON types: floats for real numbers (non-finite -> None), ints, lists, str keys."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _plain(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where} has a {type(value).__name__}, which results.json cannot hold: convert it first")


def _refuse_private_ids(value, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in PRIVATE_KEYS and item is not None:
                raise ValueError(
                    f"{where}.{key}: results.json must not hold forget-sample ids; record the forget-set size and "
                    "fingerprint instead (the ids belong in the private forget_set.json)"
                )
            _refuse_private_ids(item, f"{where}.{key}")


def write_results(path, run_config: dict, forget_set_info: dict, methods: dict[str, dict]) -> None:
    """Write ``{"run_config", "forget_set", "methods"}`` as JSON to ``path`` atomically.

    The file is written next to ``path`` and moved into place with ``os.replace``, so readers never see a
    half-written file. Numbers become plain Python floats/ints (NaN/inf -> null). ``ValueError`` if
    ``run_config`` or ``forget_set_info`` carries forget-sample ids (a non-null ``"indices"`` or
    ``"forget_indices"`` key at any depth).
    """
    _refuse_private_ids(forget_set_info, "forget_set_info")
    _refuse_private_ids(run_config, "run_config")
    payload = _plain({"run_config": run_config, "forget_set": forget_set_info, "methods": methods}, "results")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def format_results_table(methods: dict[str, dict]) -> str:
    """Markdown table ``method | A_test | A_r | 100−A_f | steps | seconds``, one row per method.

    Reads the keys ``A_test``, ``A_r``, ``A_f``, ``steps`` and ``seconds`` of each method's dict; a missing
    value prints as ``–``.
    """

    def cell(value, digits: int) -> str:
        if value is None:
            return "–"
        return str(int(value)) if digits == 0 else f"{float(value):.{digits}f}"

    lines = ["| method | A_test | A_r | 100−A_f | steps | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for name, numbers in methods.items():
        forget = numbers.get("A_f")
        row = [
            name,
            cell(numbers.get("A_test"), 2),
            cell(numbers.get("A_r"), 2),
            cell(None if forget is None else 100.0 - forget, 2),
            cell(numbers.get("steps"), 0),
            cell(numbers.get("seconds"), 1),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
