"""How sensitive is StructGuard's default? Each main hyperparameter halved and doubled, all else at the default.

Rows: the default, then ×0.5 and ×2 of the learning rates (model and projector together; λ follows as
1/learning_rate unless set), λ (``regularization_weight``), the alignment weight, the probe hit-rate floor that
sets the probe radius (doubling is capped at 100 %; on CIFAR-10 the two settle at half and twice the default's
radius) and the deletion weight growth — each run to complete forgetting on the forget sets ``--k``/``--seeds`` with the reductions of
``select_default.py`` (A_r on a fixed 1,000-image retain subsample, A_test on 2,000 test images). Runs are
appended to ``--out`` and skipped when already there (resumable); ``--report`` writes ``<out stem>.md``, a table
per k of A_test / A_r (mean over the seeds present), 100−A_f, steps and the probe radius used.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sensitivity.py --before memorised --k 64 --seeds 0 \\
        --out benchmarks/results/sensitivity/shrinking-radius.jsonl
    python benchmarks/sensitivity.py --report --out benchmarks/results/sensitivity/shrinking-radius.jsonl
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import described_parser, write_atomic
from hf_structguard.trainer import UnlearningConfig
from select_default import add_setting_options, run_variants

#: Row label -> the config fields it scales together.
KNOBS = {
    "learning rates": ("learning_rate", "projector_learning_rate"),
    "λ (regularization_weight)": ("regularization_weight",),
    "alignment weight": ("alignment_weight",),
    "probe hit-rate floor": ("probe_min_hit_rate",),
    "deletion weight growth": ("deletion_weight_growth",),
}
FACTORS = (0.5, 2.0)
#: Upper bounds of knobs that cannot be doubled past them (a hit rate is at most 100 %).
CAPS = {"probe_min_hit_rate": 100.0}


def sensitivity_variants() -> list[tuple[str, str, dict]]:
    """``(name, "structguard", overrides)``: the default, then every knob of :data:`KNOBS` at each factor."""
    default = UnlearningConfig(output_dir="/tmp/sensitivity", method="structguard")
    variants = [("default", "structguard", {})]
    for label, names in KNOBS.items():
        for factor in FACTORS:
            overrides = {name: min(getattr(default, name) * factor, CAPS.get(name, float("inf"))) for name in names}
            variants.append((f"{label} ×{factor:g}", "structguard", overrides))
    return variants


def report(out: Path) -> str:
    """Markdown tables (one per Before model and k) from the runs in ``out``."""
    runs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    groups: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[(run["before"], run["k"])][run["name"]].append(run)
    order = [name for name, _, _ in sensitivity_variants()]
    lines = []
    for (before, k), by_name in sorted(groups.items()):
        lines += [f"**{before}, k = {k}** (mean over forget seeds; A_r on 1,000 retained training images)", "",
                  "| variant | seeds | A_test | A_r | 100−A_f | steps | probe ε |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name in sorted(by_name, key=lambda n: order.index(n) if n in order else len(order)):
            rs = by_name[name]
            mean = {key: float(np.mean([r[key] for r in rs])) for key in ("A_test", "A_r", "A_f", "steps")}
            seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
            radii = "/".join(sorted({f"{r['probe_epsilon']:g}" for r in rs if "probe_epsilon" in r})) or "–"
            lines.append(f"| {name} | {seeds} | {mean['A_test']:.2f} | {mean['A_r']:.2f} | {100 - mean['A_f']:.2f} "
                         f"| {mean['steps']:.0f} | {radii} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = described_parser(__doc__)
    add_setting_options(parser)
    parser.add_argument("--report", action="store_true", help="Only write the table from --out.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.report:
        out.parent.mkdir(parents=True, exist_ok=True)
        previous = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        done = {(r["name"], r["seed"]) for r in previous if r["before"] == args.before and r["k"] == args.k}
        run_variants(args, sensitivity_variants(), done)
    table = report(out)
    write_atomic(out.with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
