"""How many probe samples StructGuard's importance needs: rank agreement of each budget with the largest.

Computes the structure-aware importance (``structure_importance``, batch mode, as StructGuard's
``on_step_begin`` does, here on the model right after the method's ``prepare``) on one forget set for each
budget (probe samples seen), and reports the Spearman rank correlation of each importance vector (all
feature-extractor parameters, flattened) with the largest budget's, the smallest per-tensor correlation, the
relative L2 error (the penalty uses raw values), and the seconds it took. The smallest
budget with ρ >= ``--min_rho`` is stated. Writes ``<output>.json`` and ``<output>.md``.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/importance_budget.py \\
        --dataset ../shared/data/cifar10-jpeg \\
        --model_name_or_path local-dir:../shared/checkpoints/resnet18-cifar10-jpeg-memorised \\
        --output benchmarks/results/importance_budget/memorised
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time

import numpy as np
import torch
from scipy.stats import rankdata

from hf_structguard.data import select_forget_set
from hf_structguard.hub import library_versions
from hf_structguard.probes import probes_for_config
from hf_structguard.structure import structure_importance
from hf_structguard.trainer import UnlearningConfig, UnlearningTrainer

from _common import attribute_anchors, load_before, script_parser, write_result  # benchmarks/_common.py

logger = logging.getLogger("importance_budget")


def spearman(ranks_a: np.ndarray, values_b: np.ndarray) -> float:
    """Spearman ρ between values with precomputed average ranks ``ranks_a`` and ``values_b`` (ties averaged)."""
    return float(np.corrcoef(ranks_a, rankdata(values_b))[0, 1])


def smallest_within(results: list[dict], min_rho: float, key: str = "spearman_vs_largest") -> int | None:
    """The smallest budget whose ``key`` (a ρ with the largest budget) is >= ``min_rho`` (None if none is)."""
    fine = [r["num_samples"] for r in results if r[key] is not None and r[key] >= min_rho]
    return min(fine) if fine else None


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """How closely ``other`` matches ``reference`` (both ``{tensor name: flat importance}``).

    ``spearman_vs_largest``: ρ over all parameters; ``min_tensor_spearman``: the smallest per-tensor ρ (tensors
    with constant importance left out); ``relative_l2_error``: ‖other − reference‖ / ‖reference‖ (the penalty
    uses the raw values, not only their ranks).
    """
    names = sorted(reference)
    flat_ref, flat_other = (np.concatenate([d[n] for n in names]).astype(np.float64) for d in (reference, other))
    per_tensor = [spearman(rankdata(reference[n]), other[n]) for n in names
                  if np.ptp(reference[n]) > 0 and np.ptp(other[n]) > 0]
    return {
        "spearman_vs_largest": spearman(rankdata(flat_ref), flat_other),
        "min_tensor_spearman": float(min(per_tensor)) if per_tensor else None,
        "relative_l2_error": float(np.linalg.norm(flat_other - flat_ref) / np.linalg.norm(flat_ref)),
    }


def importance_for_budgets(trainer: UnlearningTrainer, budgets: list[int]) -> list[dict]:
    """``[{"num_samples", "seconds", **agreement with the largest budget}]`` in increasing budget order."""
    method, model = trainer.method, trainer.model
    importances, results = {}, []
    for budget in sorted(budgets):
        started = time.perf_counter()
        importance = structure_importance(
            model, method.space, method.probes.images, method.s_ori, model.backbone_parameters(), method.align,
            mode="batch", num_samples=budget, batch_size=trainer.args.per_device_train_batch_size,
            seed=trainer.args.seed,
        )
        seconds = time.perf_counter() - started
        importances[budget] = {name: value.flatten().cpu().numpy() for name, value in importance.items()}
        results.append({"num_samples": budget, "seconds": seconds})
        logger.info("budget %d: %.1f s", budget, seconds)
    for result in results:
        result.update(agreement(importances[max(budgets)], importances[result["num_samples"]]))
    return results


def markdown(content: dict) -> str:
    lines = [
        f"Importance budget ({content['model']}, k = {content['k']}, seed {content['seed']}, "
        f"{content['num_probes']} probes, {content['num_parameters']:,} feature-extractor parameters): Spearman ρ of "
        f"each budget's importance with the largest budget's ({max(r['num_samples'] for r in content['results']):,}).",
        "",
        "| probe samples | ρ vs largest | smallest per-tensor ρ | relative L2 error | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['num_samples']:,} | {r['spearman_vs_largest']:.4f} | {r['min_tensor_spearman']:.4f} | "
              f"{r['relative_l2_error']:.4f} | {r['seconds']:.1f} |" for r in content["results"]]
    name = lambda key: f"{content[key]:,}" if content[key] else "none"  # noqa: E731
    rho = content["min_rho"]
    lines += ["", f"Smallest budget with ρ ≥ {rho}: {name('smallest_within_tolerance')} "
              f"(every per-tensor ρ ≥ {rho}: {name('smallest_within_tolerance_per_tensor')})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = script_parser(__doc__)
    parser.add_argument("--text_encoder", default=None)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe_num_steps", type=int, default=10, help="PGD iterations (the CPU benchmark's 10).")
    parser.add_argument("--budgets", nargs="+", type=int, default=[500, 1000, 2000, 5000, 10000, 20000],
                        help="Probe samples per importance budget (the largest budget is added to them).")
    parser.add_argument("--largest", type=int, default=None, help="Reference budget. Default: |D_r| = |train| − k.")
    parser.add_argument("--min_rho", type=float, default=0.95)
    parser.add_argument("--output", required=True, help="Path without suffix for the .json and .md files.")
    args = parser.parse_args(argv)

    data, before, names = load_before(args)
    anchors = attribute_anchors(data, args.text_encoder)
    train_images, train_labels = data.tensors("train", None, before.config.image_size)
    forget = torch.as_tensor(select_forget_set(len(train_labels), k=args.k, seed=args.seed).indices)
    config = UnlearningConfig(output_dir=tempfile.mkdtemp(prefix="importance-budget-"), method="structguard",
                              seed=args.seed, probe_num_steps=args.probe_num_steps, use_cpu=True)
    probes = probes_for_config(before, train_images[forget], train_labels[forget], data.num_classes, config)
    trainer = UnlearningTrainer(copy.deepcopy(before), config, train_images[forget], train_labels[forget], probes,
                                anchors=anchors)
    retain_size = len(train_labels) - args.k
    largest = args.largest or retain_size
    results = importance_for_budgets(trainer, sorted({b for b in args.budgets if b < largest} | {largest}))
    shutil.rmtree(config.output_dir, ignore_errors=True)  # the trainer never trains or saves here
    content = {
        **names, "k": args.k, "seed": args.seed, "num_probes": len(probes),
        "probe_num_steps": args.probe_num_steps, "batch_size": config.per_device_train_batch_size,
        "num_parameters": sum(p.numel() for _, p in trainer.model.backbone_parameters()),
        "retain_size": retain_size, "min_rho": args.min_rho, "results": results,
        "smallest_within_tolerance": smallest_within(results, args.min_rho),
        "smallest_within_tolerance_per_tensor": smallest_within(results, args.min_rho, "min_tensor_spearman"),
        "torch_threads": torch.get_num_threads(), "versions": library_versions(),
    }
    write_result(args.output, content, markdown(content))
    return content


if __name__ == "__main__":
    main()
