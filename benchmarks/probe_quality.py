"""How good the benchmark's probes are for their PGD budget: target-hit rate against PGD iterations.

Builds each method's probe set exactly as ``run_benchmark.py`` does (``UnlearningConfig.for_method`` with the
seed, ``probe_config_for``: the method's ε, step 2.5·ε/iterations) for several iteration counts, and reports
the share of probes the Before model classifies as their target (``target_hit_rate``), per seed and as
mean ± std, with the seconds each set took. States, per (method, k), the fewest iterations whose mean reaches
``--target``. Writes ``<output>.json`` and ``<output>.md``.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/probe_quality.py \\
        --dataset ../shared/data/cifar10-jpeg \\
        --model_name_or_path local-dir:../shared/checkpoints/resnet18-cifar10-jpeg \\
        --ks 16 --seeds 0 1 2 --iterations 10 20 100 --output benchmarks/results/probe_quality/generalising
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from hf_structguard.data import select_forget_set
from hf_structguard.hub import library_versions
from hf_structguard.probes import generate_probes, probe_config_for, target_hit_rate
from hf_structguard.trainer import UnlearningConfig

from _common import load_before, script_parser, write_result  # benchmarks/_common.py

logger = logging.getLogger("probe_quality")


def summarise(results: list[dict], target: float) -> list[dict]:
    """Per (method, k, iterations): mean, sample std and smallest hit rate over seeds, and whether the mean
    reaches ``target``; ordered by method, k, iterations."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["method"], result["k"], result["iterations"]), []).append(result)
    summary = []
    for (method, k, iterations), runs in sorted(groups.items()):
        rates = np.array([run["target_hit_rate"] for run in runs])
        summary.append({
            "method": method, "k": k, "iterations": iterations, "epsilon": runs[0]["epsilon"],
            "step_size": runs[0]["step_size"], "seeds": sorted(run["seed"] for run in runs),
            "mean": float(rates.mean()), "std": float(rates.std(ddof=1)) if len(rates) > 1 else 0.0,
            "min": float(rates.min()), "seconds": float(np.mean([run["seconds"] for run in runs])),
            "reaches_target": bool(rates.mean() >= target),
        })
    return summary


def fewest_iterations(summary: list[dict]) -> dict[str, int | None]:
    """``{"<method> k=<k>": fewest iterations whose mean reaches the target, or None}``."""
    fewest: dict[str, int | None] = {}
    for row in summary:
        key = f"{row['method']} k={row['k']}"
        fewest.setdefault(key, None)
        if row["reaches_target"] and (fewest[key] is None or row["iterations"] < fewest[key]):
            fewest[key] = row["iterations"]
    return fewest


def markdown(content: dict) -> str:
    lines = [
        f"Probe quality ({content['model']}): share of probes the Before model classifies as their target, "
        f"mean ± std over seeds {content['seeds']} (min: the worst seed), {content['probes_per_image']} probes per "
        "forget image.",
        "",
        "| method | ε | k | PGD iterations | step | probes hitting their target (%) | min (%) | seconds per set |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['epsilon']:g} | {r['k']} | {r['iterations']} | {r['step_size']:g} | "
              f"{r['mean']:.1f} ± {r['std']:.1f} | {r['min']:.1f} | {r['seconds']:.1f} |" for r in content["summary"]]
    reached = ", ".join(f"{key}: {value if value is not None else 'none of those tried'}"
                        for key, value in content["fewest_iterations"].items())
    lines += ["", f"Fewest iterations whose mean reaches {content['target']:g} %: {reached}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = script_parser(__doc__)
    parser.add_argument("--methods", nargs="+", default=["structguard", "l2ul"],
                        help="Methods whose probe settings (ε) are measured; every baseline shares l2ul's ε 4.")
    parser.add_argument("--ks", nargs="+", type=int, default=[16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", nargs="+", type=int, default=[10, 20, 100],
                        help="PGD iteration counts (the CPU benchmark's 10, the paper's 100).")
    parser.add_argument("--target", type=float, default=95.0,
                        help="Target-hit rate a probe set should reach, in percent.")
    parser.add_argument("--output", required=True, help="Path without suffix for the .json and .md files.")
    args = parser.parse_args(argv)
    if min(args.iterations) < 1 or min(args.ks) < 1:
        parser.error("--iterations and --ks must be >= 1")

    data, before, names = load_before(args)
    images, labels = data.tensors("train", None, before.config.image_size)
    base = UnlearningConfig(method="structguard", use_cpu=True)  # only its probe fields are used; writes nothing
    results = []
    for k in args.ks:
        for seed in args.seeds:
            forget = torch.as_tensor(select_forget_set(len(labels), k=k, seed=seed).indices)
            for method in args.methods:
                for iterations in args.iterations:
                    probe_config = probe_config_for(base.for_method(method, seed=seed, probe_num_steps=iterations))
                    started = time.perf_counter()
                    probes = generate_probes(before, images[forget], labels[forget], data.num_classes, probe_config,
                                             progress=False)
                    seconds = time.perf_counter() - started
                    results.append({"method": method, "epsilon": probe_config.epsilon, "k": k, "seed": seed,
                                    "iterations": iterations, "step_size": probe_config.step_size,
                                    "target_hit_rate": target_hit_rate(before, probes), "seconds": seconds})
                    logger.info("%s k=%d seed=%d %d iterations: %.1f %% (%.0f s)", method, k, seed, iterations,
                                results[-1]["target_hit_rate"], seconds)
    summary = summarise(results, args.target)
    content = {
        **names, "ks": args.ks, "seeds": args.seeds, "target": args.target,
        "probes_per_image": base.probes_per_image, "results": results,
        "summary": summary, "fewest_iterations": fewest_iterations(summary),
        "torch_threads": torch.get_num_threads(), "versions": library_versions(),
    }
    write_result(args.output, content, markdown(content))
    return content


if __name__ == "__main__":
    main()
