"""The `evaluate` metric modules shipped in ``metrics/`` (package data), loadable offline by local path."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("unlearning_accuracy", "retrieval")


def metric_path(name: str) -> Path:
    """Folder of the shipped metric ``name`` (it holds ``<name>.py``), as ``evaluate.load`` expects."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}: choose one of {METRIC_NAMES}")
    return METRICS_DIR / name


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of the shipped metric ``name`` ("unlearning_accuracy" or "retrieval") from its
    local path, so no Hub access is needed; ``kwargs`` go to ``evaluate.load``."""
    import evaluate  # imported here: it pulls in `datasets`, which the rest of the package does not need

    return evaluate.load(str(metric_path(name)), **kwargs)
