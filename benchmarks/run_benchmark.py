"""Benchmark v2: StructGuard and the baselines at complete forgetting (paper Table 2 protocol), resumable.

Every method runs until the forget accuracy A_f is exactly 0 %, capped at the paper's 100 passes over the
probe set and with no step cap; a run that hits the cap is reported with its 100−A_f and counted as such.
Along the way A_test and A_r are recorded at step 0 and the first time A_f <= 75 / 50 / 25 / 0 %
(:class:`~hf_structguard.trainer.AccuracyAtForgetLevels`), to compare methods at equal forgetting.

Each result is one JSON cell, ``<output_dir>/cells/<model tag>/<row>/k<k>-s<seed>.json``, written
atomically with the fingerprint of every setting it depends on; a rerun skips cells whose fingerprint
matches and recomputes (with a warning naming the changed settings) those whose settings changed. The
Before evaluation is the row ``before``; probe sets are cached per (model, k, seed, PGD setting) under
``probes/<model tag>``. Several processes may fill one cache with disjoint ``--rows/--ks/--seeds``.
Every run ends by rebuilding, from all cells present, ``report.md`` (Table 2 layout per Before model, accuracy
at equal forgetting, probe hit rates, cost) and ``plots/tradeoff.png``; ``--report`` does only that.

The code is split by concern: ``_rows.py`` (which rows exist, how one is run), ``_cells.py`` (the grid and the
cell cache), ``_report.py`` (the report from the cells); this script is the command line.

    # CPU profile, one thread per process; both Before models (tag=source), into one cache
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/run_benchmark.py --profile cpu \\
        --dataset ../shared/data/cifar10-jpeg \\
        --model_name_or_path generalising=local-dir:../shared/checkpoints/resnet18-cifar10-jpeg \\
            memorised=local-dir:../shared/checkpoints/resnet18-cifar10-jpeg-memorised \\
        --output_dir benchmarks/results/v2 --rows neggrad l2ul --ks 16 --seeds 0
    # the tables and plots from the cache alone (runs nothing)
    python benchmarks/run_benchmark.py --report --output_dir benchmarks/results/v2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from _cells import run_grid
from _common import described_parser
from _report import write_report
from _rows import ABLATIONS, DEFAULT_ROWS, known_rows

#: Settings per profile. ``cuda`` is the paper's protocol (docs/benchmarks.md#deviations-from-the-paper); ``cpu`` holds the reductions that make
#: the grid reachable on CPU cores. Every value applies to every method alike and can be overridden.
PROFILES = {
    "cpu": {
        "ks": [16, 64, 128],
        "seeds": [0, 1, 2],
        "retain_eval_size": 1000,  # A_r, retrieval, consistency and MIA members on a fixed subsample
        "test_eval_size": 2000,  # A_test and MIA non-members on a fixed test subsample
        "probe_num_steps": 10,  # PGD iterations of the probes (paper: 100)
        "importance_num_samples": 2000,  # StructGuard importance budget (paper: ~|D_r| = 50000)
        "num_train_epochs": 100.0,  # pass cap over the probe set (paper: 100)
        "max_steps": -1,  # no step cap (paper: none)
        "drift_every_steps": 5,
        "mia": True,
        "device": "cpu",
    },
    "cuda": {
        "ks": [16, 64, 128, 256],
        "seeds": [0, 1, 2],
        "retain_eval_size": None,
        "test_eval_size": None,
        "probe_num_steps": 100,
        "importance_num_samples": 50000,
        "num_train_epochs": 100.0,
        "max_steps": -1,
        "drift_every_steps": 1,
        "mia": True,
        "device": "cuda",
    },
}


def resolve_profile(args: argparse.Namespace) -> dict:
    overrides = {k: v for k, v in vars(args).items() if k in PROFILES["cpu"] and v is not None}
    profile = {**PROFILES[args.profile], **overrides}
    if profile["max_steps"] is None or profile["max_steps"] <= 0:
        profile["max_steps"] = -1
    return profile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = described_parser(__doc__)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", nargs="+", action="extend", default=None,
                        help="Before model(s), each 'tag=source' or 'source' (tag: its last path component).")
    parser.add_argument("--cifar_stem", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--text_encoder", default=None, help="Anchor text encoder (default: the pipeline's).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="Default: the profile's.")
    parser.add_argument("--rows", "--methods", nargs="+", default=list(DEFAULT_ROWS),
                        help=f"Rows to run (Before is always evaluated); known: {', '.join(known_rows())}.")
    parser.add_argument("--ablations", nargs="*", default=[], choices=sorted(ABLATIONS))
    parser.add_argument("--ks", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--retain_eval_size", type=int, default=None)
    parser.add_argument("--test_eval_size", type=int, default=None)
    parser.add_argument("--probe_num_steps", type=int, default=None)
    parser.add_argument("--importance_num_samples", type=int, default=None)
    parser.add_argument("--num_train_epochs", type=float, default=None, help="Pass cap over the probe set.")
    parser.add_argument("--max_steps", type=int, default=None, help="Step cap; <= 0 = none (the default).")
    parser.add_argument("--drift_every_steps", type=int, default=None)
    parser.add_argument("--mia", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--eval_seed", type=int, default=0, help="Seed of the fixed retain/test subsamples.")
    parser.add_argument("--output_dir", default="benchmarks/results/v2")
    parser.add_argument("--report", action="store_true", help="Only rebuild report.md and the plots from the cells.")
    args = parser.parse_args(argv)
    if not args.report and not args.model_name_or_path:
        parser.error("--model_name_or_path is required (except with --report)")
    return args


def main(argv: list[str] | None = None) -> str:
    """Runs the requested grid (unless ``--report``), then writes and prints the report of every cell."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not args.report:
        run_grid(args, resolve_profile(args))
    report = write_report(Path(args.output_dir))
    print(report)
    return report


if __name__ == "__main__":
    main()
