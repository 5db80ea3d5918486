"""The benchmark's report from its cells: ``report.md`` (the paper's Table 2 layout per Before model, accuracy
at equal forgetting, probe hit rates, cost) and ``plots/tradeoff.png`` (A_test against 100−A_f)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from hf_structguard.probes import auto_step_size
from hf_structguard.trainer import AccuracyAtForgetLevels

from _cells import flatten
from _common import write_atomic
from _rows import LEVELS, row_order


def load_cells(output_dir: Path) -> list[dict]:
    """Every cell under ``output_dir/cells``."""
    return [json.loads(path.read_text()) for path in sorted((output_dir / "cells").glob("*/*/k*-s*.json"))]


def _stat(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = _stat(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _group_cells(cells: list[dict]) -> dict:
    """``{model: {k: {row: [cells sorted by seed]}}}``."""
    groups: dict = {}
    for cell in sorted(cells, key=lambda c: c["seed"]):
        groups.setdefault(cell["model"], {}).setdefault(cell["k"], {}).setdefault(cell["row"], []).append(cell)
    return groups


def table2(cells: list[dict]) -> str:
    """Paper Table 2 layout per Before model: A_test / A_r / 100−A_f (mean ± sample std over seeds) per k.

    ``[n/m]`` after 100−A_f: seeds that reached A_f = 0 within the pass cap; ``†``: some seed did not, so its
    A_test and A_r are at the cap, not at complete forgetting.
    """
    lines = []
    for model, by_k in _group_cells(cells).items():
        ks = sorted(by_k)
        rows = row_order(row for by_row in by_k.values() for row in by_row)
        lines += [f"**{model}**", "", "| Metric | Method | " + " | ".join(f"k = {k}" for k in ks) + " |",
                  "|---|---|" + "---|" * len(ks)]
        for label, key in (("A_test (↑)", "A_test"), ("A_r (↑)", "A_r"), ("100−A_f (↑)", "A_f")):
            for i, row in enumerate(rows):
                entries = []
                for k in ks:
                    runs = by_k[k].get(row, [])
                    values = [(100.0 - c["final"]["A_f"]) if key == "A_f" else c["final"][key] for c in runs]
                    text = _fmt(values)
                    zero = sum(c["reached_zero"] for c in runs)
                    if runs and row != "before":
                        text += f" [{zero}/{len(runs)}]" if key == "A_f" else (" †" if zero < len(runs) else "")
                    entries.append(text)
                lines.append(f"| {label if i == 0 else ''} | {row} | " + " | ".join(entries) + " |")
        lines.append("")
    return "\n".join(lines)


def level_keys() -> list[str]:
    return ["start"] + [AccuracyAtForgetLevels.level_key(level) for level in LEVELS]


def tradeoff_table(cells: list[dict]) -> str:
    """A_test / A_r (mean over the seeds that reached the level; ``(n/m)`` when not all did) at step 0 and at
    the first step with A_f <= each level."""
    keys = level_keys()
    header = ["step 0"] + [f"A_f ≤ {key}" if key != "0" else "A_f = 0" for key in keys[1:]]
    lines = ["| Model | k | Method | " + " | ".join(header) + " |", "|---|---|---|" + "---|" * len(keys)]
    for model, by_k in _group_cells(cells).items():
        for k in sorted(by_k):
            for row in row_order(by_k[k]):
                runs = by_k[k][row]
                if row == "before":
                    continue
                entries = []
                for key in keys:
                    hits = [c["levels"][key] for c in runs if key in c["levels"]]
                    if not hits:
                        entries.append("–")
                        continue
                    text = " / ".join(f"{np.mean([h[m] for h in hits]):.1f}" for m in ("A_test", "A_r"))
                    entries.append(text + ("" if len(hits) == len(runs) else f" ({len(hits)}/{len(runs)})"))
                lines.append(f"| {model} | {k} | {row} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def _probe_step(cell: dict) -> float | None:
    """The cell's PGD step: recorded with its probes, else resolved from its config (cells written before the
    step was recorded); None when neither says."""
    if cell["probes"].get("step_size") is not None:
        return cell["probes"]["step_size"]
    config = cell.get("settings", {}).get("config", {})
    if "probe_num_steps" not in config:
        return None
    step = config.get("probe_step_size")
    return step if step is not None else auto_step_size(cell["probes"]["epsilon"], config["probe_num_steps"])


def hit_rate_table(cells: list[dict]) -> str:
    """Target-hit rate (%) of each probe set under its Before model, mean ± std over seeds, per PGD setting
    (radius ε, step size), with the rows that used it."""
    rates: dict = {}
    for cell in cells:
        if "probes" in cell:
            info = cell["probes"]
            key = (cell["model"], cell["k"], info["epsilon"], _probe_step(cell))
            entry = rates.setdefault(key, {"seeds": {}, "rows": set()})
            entry["seeds"][cell["seed"]] = info["target_hit_rate"]
            entry["rows"].add(cell["row"])
    lines = ["| Model | k | ε | PGD step | probes hitting their target (%) | seeds | rows |", "|---" * 7 + "|"]
    for (model, k, eps, step), entry in sorted(rates.items(), key=lambda item: str(item[0])):
        step = "–" if step is None else f"{step:g}"
        rate = _fmt(list(entry["seeds"].values()), 1)
        lines.append(f"| {model} | {k} | {eps:g} | {step} | {rate} | {len(entry['seeds'])} | "
                     f"{', '.join(row_order(entry['rows']))} |")
    return "\n".join(lines) + "\n"


def cost_table(cells: list[dict]) -> str:
    """Steps, passes and wall time per phase (mean over seeds), and each StructGuard row's time / L2UL's."""
    phases = ("probes", "importance_setup", "unlearning", "evaluation")
    lines = ["| Model | k | Method | steps | passes | probes s | importance+set-up s | unlearning s | eval s | "
             "total s | ÷ L2UL |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    total = lambda c: sum(c["seconds_phases"].get(p, 0.0) for p in phases)  # noqa: E731
    for model, by_k in _group_cells(cells).items():
        for k in sorted(by_k):
            l2ul = [total(c) for c in by_k[k].get("l2ul", [])]
            for row in row_order(by_k[k]):
                runs = by_k[k][row]
                if row == "before":
                    continue
                mean = lambda f: float(np.mean([f(c) for c in runs]))  # noqa: E731
                ratio = f"{mean(total) / np.mean(l2ul):.2f}" if l2ul and row.startswith("structguard") else ""
                lines.append(
                    f"| {model} | {k} | {row} | {mean(lambda c: c['steps']):.0f} | {mean(lambda c: c['passes']):.1f} | "
                    + " | ".join(f"{mean(lambda c, p=p: c['seconds_phases'].get(p, 0.0)):.1f}" for p in phases)
                    + f" | {mean(total):.1f} | {ratio} |"
                )
    return "\n".join(lines) + "\n"


def tradeoff_points(runs: list[dict]) -> list[tuple[float, float]]:
    """``(100−A_f, A_test)`` seed means at step 0, at each forget level (over the seeds that reached it, at the
    A_f measured there) and at the end of the run; a point repeated by levels passed in one step is kept once."""
    points = []
    for key in level_keys():
        hits = [run["levels"][key] for run in runs if key in run.get("levels", {})]
        if hits:
            points.append((100 - float(np.mean([h["A_f"] for h in hits])), float(np.mean([h["A_test"] for h in hits]))))
    points.append((100 - float(np.mean([r["final"]["A_f"] for r in runs])),
                   float(np.mean([r["final"]["A_test"] for r in runs]))))
    return [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]


def plot_tradeoff(cells: list[dict], path: Path) -> Path | None:
    """A_test against 100−A_f per method (:func:`tradeoff_points`, square = end of the run), one panel per
    (model, k); Before as a black star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _group_cells(cells)
    ks = sorted({k for by_k in groups.values() for k in by_k})
    if not ks:
        return None
    fig, axes = plt.subplots(len(groups), len(ks), figsize=(4.2 * len(ks), 3.4 * len(groups)), squeeze=False)
    colours = {row: f"C{i % 10}" for i, row in enumerate(row_order(c["row"] for c in cells if c["row"] != "before"))}
    for r, (model, by_k) in enumerate(groups.items()):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            ax.set_title(f"{model}, k = {k}", fontsize=9)
            ax.set_xlabel("100 − A_f (%)")
            ax.set_ylabel("A_test (%)")
            for row, runs in by_k.get(k, {}).items():
                points = tradeoff_points(runs)
                if row == "before":  # no levels: its one point
                    ax.plot(*points[-1], "k*", markersize=10, label="before")
                    continue
                ax.plot(*zip(*points), marker="o", markersize=3, color=colours[row], label=row)
                ax.plot(*points[-1], marker="s", markersize=5, color=colours[row])
            ax.set_xlim(-2, 102)
            ax.grid(alpha=0.3)
    legend = {}
    for ax in axes.flat:
        legend.update(zip(ax.get_legend_handles_labels()[1], ax.get_legend_handles_labels()[0]))
    names = row_order(legend)
    fig.legend([legend[n] for n in names], names, loc="lower center", ncol=min(len(names), 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def caption_for(cells: list[dict]) -> str:
    """States every setting that applies to all methods alike, read from the cells themselves."""
    def values(getter, source=lambda c: c["settings"].get("config")) -> str:
        found = sorted({str(getter(source(c))) for c in cells if source(c) is not None})
        return " / ".join(found) if found else "–"

    evals = lambda key: values(lambda e: "all" if e.get(key) is None else e[key],  # noqa: E731
                               lambda c: c["settings"]["eval"])
    return (
        "**Table (benchmark v2).** Unlearning of k random training images until A_f = 0, capped at "
        f"{values(lambda c: c['num_train_epochs'])} passes over the probe set (step cap "
        f"{values(lambda c: c['max_steps'])}, -1 = none); seeds {sorted({c['seed'] for c in cells})} (forget set, "
        "probes and method seed); mean ± sample std over the seeds present. Settings applied to every method "
        f"alike: A_r on a fixed subsample of {evals('retain_eval_size')} retain images and A_test on "
        f"{evals('test_eval_size')} test images (eval seed {evals('eval_seed')}); probes with "
        f"{values(lambda c: c['probe_num_steps'])} PGD iterations; StructGuard importance over "
        f"{values(lambda c: c['importance_num_samples'])} probe samples. [n/m]: seeds that reached A_f = 0 within "
        "the cap; †: some seeds stopped at the cap (or where their loss stopped being finite: `diverged_step` in "
        "the cell), their A_test / A_r are taken there."
    )


def mixed_settings(cells: list[dict]) -> list[str]:
    """Per (model, row): the config settings that differ between its cells (besides the seed), e.g. cells left
    from an older version; one line each."""
    configs: dict = {}
    for cell in cells:
        config = {k: v for k, v in flatten(cell["settings"].get("config", {})).items() if k != "seed"}
        configs.setdefault((cell["model"], cell["row"]), []).append(config)
    lines = []
    for (model, row), found in configs.items():
        keys = {key for config in found for key in config}
        differ = sorted(key for key in keys if len({json.dumps(c.get(key), default=str) for c in found}) > 1)
        if differ:
            lines.append(f"- {model} / {row}: cells differ in {', '.join(differ)}")
    return lines


def write_report(output_dir: Path) -> str:
    """``report.md`` (Table 2 layout, trade-off, probe hit rate, cost) and ``plots/tradeoff.png`` from the cells."""
    cells = load_cells(output_dir)
    if not cells:
        raise FileNotFoundError(f"no cells under {output_dir / 'cells'}")
    mixed = mixed_settings(cells)
    warning = ["**Warning: cells computed with different settings are pooled below.**", *mixed, ""] if mixed else []
    runs = [f"{c['model']} / {c['row']} k = {c['k']} seed {c['seed']}: step {c['diverged_step']}"
            for c in cells if c.get("diverged_step") is not None]
    diverged = [f"**Diverged** (loss or gradients not finite; the run ends before that step): {'; '.join(runs)}.",
                ""] if runs else []
    report = "\n".join([
        caption_for(cells), "", *warning, table2(cells), *diverged,
        "**Accuracy at equal forgetting** (A_test / A_r, %, mean over seeds; step 0 is after the method's set-up, "
        "e.g. with StructGuard's fresh projector; (n/m): seeds that reached the level).", "", tradeoff_table(cells),
        "**Probe sets** (target-hit rate under the Before model, per PGD setting).", "", hit_rate_table(cells),
        "**Cost** (mean over seeds; wall time by phase; ÷ L2UL: total time relative to L2UL's at the same k).", "",
        cost_table(cells),
    ])
    write_atomic(output_dir / "report.md", report)
    plot_tradeoff(cells, output_dir / "plots" / "tradeoff.png")
    return report
