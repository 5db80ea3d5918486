"""Verification benchmark (issue #22): every method — both StructGuard presets and Oracle included — against N
models retrained from scratch without the forget set, stopping at A_f = 0 and at the retrained level.

    python benchmarks/verification.py                                    # embedded digits, k = 4 and 16, N = 8
    python benchmarks/verification.py --k 4 --num_models 4               # a first, cheaper pass
    python benchmarks/verification.py --dataset DIR --model_name_or_path BEFORE --retrain_recipe RECIPE.json

Resumable: every model's measurements are a cell (``<output>/cells/k<k>/<target>/cells/<row>@<target>/seed-<s>.json``;
retrained references are cached in ``--cache_dir``), so a rerun — or a larger ``--num_models`` — only computes
what is missing. Writes ``<output>/verification.json`` and ``verification.md`` (one table per k).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hf_structguard.arguments import AnchorArguments, DataArguments, ModelArguments
from hf_structguard.methods import benchmark_rows
from hf_structguard.trainer import UnlearningConfig
from hf_structguard.verification import VerifyArguments, format_table, run_verification

from _common import described_parser, locate, write_result

#: Table rows: every registered method and preset, label -> (registry method, config fields).
ROWS = benchmark_rows()
TARGETS = ("zero", "retrained")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = described_parser(__doc__)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", default=None, help="The Before model (empty: the cached default).")
    parser.add_argument("--retrain_recipe", default=None, help="The Before model's training recipe (JSON).")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 16], help="Forget-set sizes (forget seed 0).")
    parser.add_argument("--num_models", type=int, default=8, help="N unlearning runs and N retrained models.")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="Methods (table rows).")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS, help="Stopping targets.")
    parser.add_argument("--cache_dir", default=None, help="Cache of retrained references (default: the user cache).")
    parser.add_argument("--output", default="benchmarks/results/verification", help="Results folder.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    output = Path(args.output)
    verify_args = VerifyArguments(num_models=args.num_models, retrain_recipe=args.retrain_recipe,
                                  cache_dir=args.cache_dir)
    content, tables = {}, []
    for k in args.k:
        for target in args.targets:
            folder = output / "cells" / f"k{k}" / target
            rows = {label: UnlearningConfig(output_dir=str(folder), method=method, forget_accuracy_target=target,
                                            disable_tqdm=True, **fields)
                    for label, (method, fields) in ((label, ROWS[label]) for label in args.rows)}
            result = run_verification(
                DataArguments(dataset=locate(args.dataset), forget_k=k),
                ModelArguments(model_name_or_path=locate(args.model_name_or_path)),
                AnchorArguments(), UnlearningConfig(output_dir=str(folder)), verify_args, rows=rows,
            )
            content.setdefault(f"k{k}", {})[target] = result
        entries = [(label, content[f"k{k}"][target]["methods"][label])
                   for label in args.rows for target in args.targets]
        retrained = content[f"k{k}"][args.targets[0]]["retrained"]
        tables.append(f"### k = {k}, N = {args.num_models}\n\n{format_table(entries, retrained)}\n")
    write_result(output / "verification", content, "\n".join(tables))
    return content


if __name__ == "__main__":
    main()
