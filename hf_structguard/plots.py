"""Figures of a run: structural drift per step (the paper's Figure 2a) and representation-consistency
histograms (Figure 6), drawn from ``log_history`` and ``results.json`` content."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DRIFT_KEY = "structural_drift"


def plot_structural_drift(logs: dict[str, list[dict]], path: Path) -> Path | None:
    """Mean |S_unl − S_ori| on the probes per optimisation step, one line per method."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    drawn = False
    for method, history in logs.items():
        points = [(row["step"], row[DRIFT_KEY]) for row in history if DRIFT_KEY in row and "step" in row]
        if points:
            steps, drift = zip(*points)
            ax.plot(steps, drift, label=method)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("structural drift  mean |S_unl − S_ori|")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_consistency(results: dict[str, dict], path: Path) -> Path | None:
    """Histograms of the cosine between Before and after embeddings of the same retained samples."""
    histograms = {name: r["consistency"]["histogram"] for name, r in results.items() if r.get("consistency")}
    if not histograms:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, hist in histograms.items():
        edges = hist["bins"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        total = max(sum(hist["counts"]), 1)
        ax.plot(centres, [c / total for c in hist["counts"]], drawstyle="steps-mid", label=name)
    ax.set_xlabel("cosine(Before, after) of retained embeddings")
    ax.set_ylabel("share of samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_run(output_dir: Path, results: dict[str, dict], logs: dict[str, list[dict]]) -> list[Path]:
    """Write every plot of a run under ``output_dir/plots`` and return the written paths."""
    folder = Path(output_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        plot_structural_drift(logs, folder / "structural_drift.png"),
        plot_consistency(results, folder / "consistency.png"),
    ]
    return [p for p in written if p is not None]
