"""Choose StructGuard's default on retained TRAINING data: run named config variants on CIFAR-10 forget sets.

Each variant is ``name=method`` or ``name=method:{json overrides}``; every variant of a forget set shares the
probe sets (one per PGD setting). Reductions as in the benchmark's CPU profile (10 PGD iterations, importance
over 2,000 probes); A_r on a fixed 1,000-image retain subsample decides, A_test (2,000 test images) is only
reported. One JSON line per run is appended to ``--out``.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/select_default.py --before memorised --seeds 0 \\
        --out benchmarks/results/selection/runs.jsonl \\
        --variants 'default=structguard' 'ascent=structguard:{"deletion_loss":"ascent"}' 'l2ul=l2ul'
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time

import numpy as np
import torch

from hf_structguard.data import select_forget_set
from hf_structguard.evaluation.accuracy import predict
from hf_structguard.arguments import DataArguments, ModelArguments
from hf_structguard.pipeline import load_before_model, load_data
from hf_structguard.probes import probes_for_config, target_hit_rate
from hf_structguard.trainer import UnlearningConfig, run_unlearning

from _common import attribute_anchors, described_parser, locate  # benchmarks/_common.py

CHECKPOINTS = {"memorised": "resnet18-cifar10-jpeg-memorised", "generalising": "resnet18-cifar10-jpeg"}


#: The resolved config fields recorded with every run, so that a "default" row says which default it was.
RECORDED_FIELDS = (
    "learning_rate", "batchnorm", "deletion_loss", "importance_normalization", "regularization_weight",
    "deletion_weight_growth", "alignment_weight", "alignment_scaling", "probe_min_hit_rate", "preset",
    "per_sample_stopping", "deletion_margin",
)


def source_revision() -> str:
    """The git commit of this checkout, with ``+dirty`` when files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def parse_variant(spec: str) -> tuple[str, str, dict]:
    name, _, rest = spec.partition("=")
    method, _, overrides = rest.partition(":")
    return name, method, json.loads(overrides) if overrides else {}


def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    logits, _ = predict(model, images)
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """The options that pick the Before model, the data and the forget sets (shared with sensitivity.py)."""
    parser.add_argument("--before", choices=sorted(CHECKPOINTS), default="memorised")
    parser.add_argument("--checkpoints", default="../shared/checkpoints", help="Folder of the Before models.")
    parser.add_argument("--dataset", default="../shared/data/cifar10-jpeg", help="Dataset folder or Hub id.")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", required=True, help="JSON-lines file the runs are appended to.")


def run_variants(args: argparse.Namespace, variants: list[tuple[str, str, dict]], done=frozenset()) -> list[dict]:
    """Run every ``(name, method, overrides)`` variant on the forget sets ``args.k``/``args.seeds`` of the Before
    model ``args.before``; ``(name, seed)`` pairs in ``done`` are skipped. Each run is appended to ``args.out``."""
    revision = source_revision()
    data = load_data(DataArguments(dataset=locate(args.dataset)))
    source = locate(f"local-dir:{args.checkpoints}/{CHECKPOINTS[args.before]}")
    before, _ = load_before_model(data, ModelArguments(model_name_or_path=source))
    before.eval()
    anchors = attribute_anchors(data)
    train_images, train_labels = data.tensors("train", None, before.config.image_size)
    test_rows = np.sort(np.random.default_rng(0).permutation(len(data.test))[:2000]).tolist()
    test_images, test_labels = data.tensors("test", test_rows, before.config.image_size)
    rows = []
    for seed in args.seeds:
        forget = torch.as_tensor(select_forget_set(len(train_labels), k=args.k, seed=seed).indices)
        keep = torch.ones(len(train_labels), dtype=torch.bool)
        keep[forget] = False
        retain_rows = torch.as_tensor(np.sort(np.random.default_rng(0).permutation(int(keep.sum()))[:1000]))
        retain_images, retain_labels = train_images[keep][retain_rows], train_labels[keep][retain_rows]
        forget_images, forget_labels = train_images[forget], train_labels[forget]
        probe_cache: dict = {}
        for name, method, overrides in variants:
            if (name, seed) in done:
                continue
            config = UnlearningConfig(
                output_dir="/tmp/select-default", method=method, seed=seed, probe_num_steps=10,
                importance_num_samples=2000, drift_num_probes=0, disable_tqdm=True, **overrides,
            )  # fmt: skip
            started = time.perf_counter()
            probes = probes_for_config(before, forget_images, forget_labels, data.num_classes, config, probe_cache)
            model, info = run_unlearning(copy.deepcopy(before), config, forget_images, forget_labels, probes, anchors=anchors)
            row = {
                "name": name, "method": method, "overrides": overrides, "before": args.before, "k": args.k,
                "seed": seed, "steps": info["steps"], "A_f": accuracy(model, forget_images, forget_labels),
                "A_r": accuracy(model, retain_images, retain_labels), "A_test": accuracy(model, test_images, test_labels),
                "probe_hit_rate": target_hit_rate(before, probes), "probe_epsilon": probes.config.epsilon, "seconds": time.perf_counter() - started,
                "config": {name: getattr(config, name) for name in RECORDED_FIELDS}, "revision": revision,
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = described_parser(__doc__)
    add_setting_options(parser)
    parser.add_argument("--variants", nargs="+", required=True,
                        help="Variants, each name=method or name=method:{json UnlearningConfig overrides}.")
    args = parser.parse_args(argv)
    run_variants(args, [parse_variant(spec) for spec in args.variants])


if __name__ == "__main__":
    main()
