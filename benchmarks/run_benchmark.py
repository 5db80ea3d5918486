"""Benchmark StructGuard and the baselines on one dataset and Before model (paper Table 2 layout).

    # CPU profile (reductions applied to every method alike, stated in the table caption); set OMP_NUM_THREADS
    # to the physical core count (1 on the machine that wrote benchmarks/results/cpu: two threads on one
    # core's hyperthreads are much slower)
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/run_benchmark.py --profile cpu \\
        --dataset /work/shared/data/cifar10-jpeg \\
        --model_name_or_path local-dir:/work/shared/checkpoints/resnet18-cifar10-jpeg \\
        --output_dir benchmarks/results/cpu
    # CUDA profile: the paper's settings, k in {16, 64, 128, 256}
    python benchmarks/run_benchmark.py --profile cuda --dataset ... --model_name_or_path ... --cifar_stem true
    # ablations of StructGuard (paper Tables 4-6) on the same forget sets and probes
    python benchmarks/run_benchmark.py ... --ablations components alignment anchors

For every k and seed: one forget set (seed = forget seed = method seed), one Before evaluation, one probe
set per PGD setting shared by all methods, then each method from a copy of the Before model. Writes
``benchmark.json`` (every number of every run plus the settings), ``table.md`` (Table 2 layout, mean ± std
over seeds, then retrieval / MIA / steps / time / memory / speed) and PNG plots under ``plots/``:
structural drift per step (Figure 2a), consistency histograms (Figure 6), a retrieval grid (Figure 5).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from hf_structguard.data import select_forget_set
from hf_structguard.evaluation import EvalSets, evaluate_model
from hf_structguard.evaluation.accuracy import predict
from hf_structguard.hub import library_versions
from hf_structguard.methods import get_method
from hf_structguard.pipeline import (
    AnchorArguments,
    DataArguments,
    ModelArguments,
    build_anchors,
    load_before_model,
    load_data,
    resolve_attributes,
)
from hf_structguard.probes import probes_for_config
from hf_structguard.plots import plot_consistency, plot_structural_drift
from hf_structguard.structure import ALIGNMENT_MEASURES
from hf_structguard.trainer import UnlearningConfig, run_unlearning

logger = logging.getLogger("benchmark")

METHODS = ("neggrad", "adv", "l2ul", "rawp", "fisher", "structguard", "oracle")

#: Settings per profile. ``cuda`` is the paper's protocol (method.md); ``cpu`` holds the reductions that
#: make all methods x k in {16, 64} x 3 seeds fit 60 minutes on 2 CPU cores. Every value applies to every
#: method alike and can be overridden on the command line.
PROFILES = {
    "cpu": {
        "ks": [16, 64],
        "seeds": [0, 1, 2],
        "retain_eval_size": 1000,  # A_r, retrieval gallery, consistency and MIA members on a fixed subsample
        "test_eval_size": 2000,  # A_test and MIA non-members on a fixed test subsample
        "probe_num_steps": 10,  # PGD iterations of the probes (paper: 100)
        "importance_num_samples": 2000,  # StructGuard importance budget (paper: ~|D_r| = 50000)
        "num_train_epochs": 100.0,  # pass cap over the probe set (paper: 100); max_steps overrides it
        "max_steps": 100,  # step cap (paper: none)
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

#: StructGuard ablation variants: name -> UnlearningConfig overrides (paper Tables 4, 5, 6).
ABLATIONS = {
    "components": {  # Table 5: structure-aware alignment (SA), regularisation (SR), classifier reg (CR)
        "structguard[-SA]": {"use_alignment": False},
        "structguard[-SR]": {"use_regularization": False},
        "structguard[-CR]": {"use_classifier_reg": False},
        "structguard[-SA-SR-CR]": {"use_alignment": False, "use_regularization": False, "use_classifier_reg": False},
    },
    "alignment": {f"structguard[{m}]": {"alignment_measure": m} for m in ALIGNMENT_MEASURES if m != "cosine"},
    "anchors": {"structguard[visual]": {"anchor_type": "visual"}},  # Table 4 (semantic = structguard)
}


# --------------------------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak memory of a phase: CUDA max allocated (reset at entry) or the process RSS sampled every 20 ms."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = 0.0
        self.start_mib = 0.0

    @staticmethod
    def _rss_mib() -> float:
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self._rss_mib())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mib = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mib = self.peak_mib = self._rss_mib()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, self._rss_mib())
        return False

    def as_dict(self) -> dict:
        kind = "cuda_max_allocated" if self.device.type == "cuda" else "process_rss"
        return {"kind": kind, "peak_mib": self.peak_mib, "increase_mib": self.peak_mib - self.start_mib}


@torch.inference_mode()
def forward_images_per_second(model, images: torch.Tensor, batch_size: int = 256, repeats: int = 1) -> float:
    """Raw ``model(pixel_values)`` throughput (eval mode, images already in memory), after one warm-up batch."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    model(images[:batch_size].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.train(was_training)
    return repeats * len(images) / (time.perf_counter() - started)


def evaluated_images(metrics: dict, with_reference: bool) -> int:
    """Images that one evaluate_model call pushes through a network (test + retain + forget [+ reference])."""
    sizes = metrics["sizes"]
    return sizes["test"] + sizes["retain"] + sizes["forget"] + (sizes["retain"] if with_reference else 0)


def fixed_subsample(total: int, size: int | None, seed: int = 0) -> np.ndarray | None:
    if size is None or size >= total:
        return None
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])


# ------------------------------------------------------------------------------------------ one benchmark
def method_variants(methods: list[str], ablations: list[str]) -> list[tuple[str, str, dict]]:
    """``(row name, registry method, config overrides)`` for the methods and the requested ablations."""
    variants = [(name, name, {}) for name in methods]
    for group in ablations:
        if group not in ABLATIONS:
            raise ValueError(f"unknown ablation group {group!r}; choose from {sorted(ABLATIONS)}")
        variants += [(name, "structguard", overrides) for name, overrides in ABLATIONS[group].items()]
    for _, method, _ in variants:
        get_method(method)  # unknown names fail before any work
    return variants


def _top_neighbours(model, queries: torch.Tensor, gallery_embeddings: torch.Tensor, topk: int, self_rows=None):
    _, q = predict(model, queries)
    sims = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(gallery_embeddings, dim=1).T
    if self_rows is not None:
        for row, col in enumerate(self_rows):
            if col is not None:
                sims[row, col] = -math.inf
    return sims.topk(topk, dim=1).indices.tolist()


def retrieval_examples(model, sets: EvalSets, num_queries: int = 2, topk: int = 5) -> dict:
    """Top-k retain-gallery neighbours of the first forget queries and of the first retain queries."""
    index = torch.as_tensor(sets.retain_indices())
    gallery_images = sets.retain[0][index]
    _, gallery = predict(model, gallery_images)
    forget_q = sets.forget[0][:num_queries]
    retain_rows = list(range(min(num_queries, len(index))))
    return {
        "forget": _top_neighbours(model, forget_q, gallery, topk),
        "retain": _top_neighbours(model, gallery_images[retain_rows], gallery, topk, self_rows=retain_rows),
    }


def run_benchmark(args: argparse.Namespace) -> dict:
    profile = {**PROFILES[args.profile], **{k: v for k, v in vars(args).items() if k in PROFILES["cpu"] and v is not None}}
    if profile["max_steps"] is not None and profile["max_steps"] <= 0:
        profile["max_steps"] = -1
    device = torch.device(profile["device"] if profile["device"] != "cuda" or torch.cuda.is_available() else "cpu")
    if profile["device"] == "cuda" and device.type != "cuda":
        logger.warning("--device cuda requested but CUDA is not available: running on the CPU")
    variants = method_variants(args.methods, args.ablations or [])
    output_dir = Path(args.output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    total_started = time.perf_counter()

    started = time.perf_counter()
    data_args = DataArguments(dataset=args.dataset, retain_eval_size=profile["retain_eval_size"], mia=profile["mia"])
    data = load_data(data_args)
    model_args = ModelArguments(model_name_or_path=args.model_name_or_path, cifar_stem=args.cifar_stem)
    before, before_source = load_before_model(data, model_args)
    before.to(device).eval()
    size = before.config.image_size
    anchor_args = AnchorArguments(text_encoder=args.text_encoder)
    anchors = build_anchors(data, anchor_args, resolve_attributes(data, anchor_args))
    train_images, train_labels = data.tensors("train", None, size)
    test_rows = fixed_subsample(len(data.test), profile["test_eval_size"], seed=args.eval_seed)
    test = data.tensors("test", None if test_rows is None else test_rows.tolist(), size)
    setup_seconds = time.perf_counter() - started
    sources = {"before": before_source, "anchors": anchors.metadata}
    raw_forward = forward_images_per_second(before, test[0])
    logger.info("set-up %.1f s; raw forward %.0f images/s on %s", setup_seconds, raw_forward, device)

    base = UnlearningConfig(
        output_dir=tempfile.mkdtemp(prefix="structguard-benchmark-"),
        method="structguard",
        probe_num_steps=profile["probe_num_steps"],
        importance_num_samples=profile["importance_num_samples"],
        num_train_epochs=profile["num_train_epochs"],
        max_steps=profile["max_steps"],
        drift_every_steps=profile["drift_every_steps"],
        use_cpu=device.type != "cuda",
    )
    runs: list[dict] = []
    logs_by_k: dict[int, dict] = {}
    consistency_by_k: dict[int, dict] = {}
    examples: dict = {}
    for seed in profile["seeds"]:  # seed-major: a partial run holds every k of the first seeds
        for k in profile["ks"]:
            forget = select_forget_set(len(train_labels), k=k, seed=seed)
            keep = torch.ones(len(train_labels), dtype=torch.bool)
            keep[torch.as_tensor(forget.indices)] = False
            forget_images = train_images[torch.as_tensor(forget.indices)]
            forget_labels = train_labels[torch.as_tensor(forget.indices)]
            sets = EvalSets(
                test=test,
                retain=(train_images[keep], train_labels[keep]),
                forget=(forget_images, forget_labels),
                retain_subsample=profile["retain_eval_size"],
                seed=args.eval_seed,
            )
            first = seed == profile["seeds"][0]
            with PeakMemory(device) as memory:
                metrics = evaluate_model(before, sets, retrieval=True, mia=profile["mia"])
            evaluation = metrics.pop("seconds")
            metrics.update(
                seconds_phases={"evaluation": evaluation}, peak_memory=memory.as_dict(), steps=0,
                eval_images_per_second=evaluated_images(metrics, False) / evaluation,
            )
            runs.append({**metrics, "k": k, "seed": seed, "method": "before"})
            if first and k == profile["ks"][0]:
                examples["before"] = retrieval_examples(before, sets)
            probe_cache: dict = {}
            for name, method, overrides in variants:
                config = base.for_method(method, seed=seed, **overrides)
                with PeakMemory(device) as memory:
                    started = time.perf_counter()
                    probes = probes_for_config(before, forget_images, forget_labels, data.num_classes, config, probe_cache)
                    probe_seconds = time.perf_counter() - started
                    retain = sets.retain if get_method(method).needs_retain else None
                    model, info = run_unlearning(
                        copy.deepcopy(before), config, forget_images, forget_labels, probes,
                        anchors=anchors, retain_dataset=retain,
                    )
                unlearning_memory = memory.as_dict()
                with PeakMemory(device) as memory:
                    metrics = evaluate_model(model, sets, reference_model=before, retrieval=True, mia=profile["mia"])
                evaluation = metrics.pop("seconds")
                phases = info.get("seconds_phases", {})
                hooks = phases.get("method_hooks", 0.0)  # inside train(): e.g. StructGuard's importance
                setup = phases.get("prepare", 0.0) + hooks  # prepare is before train() (S_ori, projector, MAS, Fisher scrub)
                metrics.update(
                    steps=info["steps"],
                    stopped_at_zero=info["stopped_at_zero"],
                    num_probes=len(probes),
                    seconds_phases={
                        "probes": probe_seconds,
                        "importance_setup": setup,  # trainer set-up (S_ori, projector, MAS) + method hooks (importance)
                        "unlearning": info["seconds"] - hooks,
                        "evaluation": evaluation,
                        "raw": phases,
                    },
                    peak_memory={"unlearning": unlearning_memory, "evaluation": memory.as_dict()},
                    eval_images_per_second=evaluated_images(metrics, True) / evaluation,
                )
                runs.append({**metrics, "k": k, "seed": seed, "method": name, "config_overrides": overrides})
                logger.info(
                    "k=%d seed=%d %s: A_test %.2f A_r %.2f A_f %.2f, %d steps, %.1f s",
                    k, seed, name, metrics["A_test"], metrics["A_r"], metrics["A_f"], info["steps"],
                    probe_seconds + info["seconds"] + evaluation,
                )
                if first:
                    logs_by_k.setdefault(k, {})[name] = info["log_history"]
                    consistency_by_k.setdefault(k, {})[name] = {"consistency": metrics.get("consistency")}
                    if k == profile["ks"][0] and name in args.example_methods:
                        examples[name] = retrieval_examples(model, sets)
                        examples.setdefault("_sets", sets)
                del model
            write_outputs(output_dir, args, profile, device, runs, sources, setup_seconds, raw_forward,
                          total_started, complete=False)
            if first:
                plot_structural_drift(logs_by_k[k], output_dir / "plots" / f"structural_drift_k{k}.png")
                plot_consistency(consistency_by_k[k], output_dir / "plots" / f"consistency_k{k}.png")
                if k == profile["ks"][0] and "_sets" in examples:
                    plot_retrieval_grid(examples, output_dir / "plots" / f"retrieval_k{k}.png")
    shutil.rmtree(base.output_dir, ignore_errors=True)  # nothing is saved there (save_strategy "no")
    return write_outputs(output_dir, args, profile, device, runs, sources, setup_seconds, raw_forward,
                         total_started, complete=True)


# ----------------------------------------------------------------------------------------------- outputs
def plot_retrieval_grid(examples: dict, path: Path) -> Path:
    """Figure 5: per method, retain queries (green frame = same class) and forget queries (red frame)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets: EvalSets = examples["_sets"]
    index = torch.as_tensor(sets.retain_indices())
    gallery_images, gallery_labels = sets.retain[0][index], sets.retain[1][index]
    methods = [m for m in examples if m != "_sets"]
    rows = []
    for method in methods:
        for case in ("retain", "forget"):
            for q, neighbours in enumerate(examples[method][case]):
                if case == "retain":
                    query, label = gallery_images[q], int(gallery_labels[q])
                else:
                    query, label = sets.forget[0][q], int(sets.forget[1][q])
                rows.append((method, case, query, label, neighbours))
    topk = len(rows[0][4])
    fig, axes = plt.subplots(len(rows), topk + 1, figsize=(1.2 * (topk + 1), 1.25 * len(rows)), squeeze=False)
    for r, (method, case, query, label, neighbours) in enumerate(rows):
        panels = [(query, None)] + [(gallery_images[n], int(gallery_labels[n]) == label) for n in neighbours]
        for c, (image, hit) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if hit is None else ("tab:green" if case == "retain" else "tab:red")
            width = 3 if hit else 1
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(width)
        axes[r][0].set_ylabel(f"{method}\n{case} q", fontsize=6)
    fig.suptitle("Retrieval (top-5 of the retain gallery); thick frame = same class as the query", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stat(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = _stat(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(runs: list[dict]) -> dict:
    """mean/std over seeds of the headline numbers per (k, method)."""
    summary: dict = {}
    for run in runs:
        entry = summary.setdefault(str(run["k"]), {}).setdefault(run["method"], {"seeds": []})
        entry["seeds"].append(run["seed"])
        values = {
            "A_test": run["A_test"], "A_r": run["A_r"], "100-A_f": 100.0 - run["A_f"], "steps": run["steps"],
            **{f"retain_{m}": v for m, v in run["retrieval"]["retain"].items()},
            **{f"forget_{m}": v for m, v in run["retrieval"]["forget"].items()},
        }
        if run.get("mia"):
            values["mia_forget_member_rate"] = 100.0 * run["mia"]["forget_member_rate"]
            if "forget_auc" in run["mia"]:
                values["mia_forget_auc"] = 100.0 * run["mia"]["forget_auc"]
        for key, value in values.items():
            entry.setdefault(key, []).append(value)
    for methods in summary.values():
        for entry in methods.values():
            for key, value in list(entry.items()):
                if key != "seeds":
                    mean, std = _stat(value)
                    entry[key] = {"mean": mean, "std": std, "values": value}
    return summary


def markdown_table(runs: list[dict], caption: str, raw_forward: float) -> str:
    ks = sorted({r["k"] for r in runs})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    cell = lambda k, m, f: _fmt([f(r) for r in runs if r["k"] == k and r["method"] == m])  # noqa: E731
    lines = [caption, "", "| Metric | Method | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks)]
    for label, fn in (("A_test (↑)", lambda r: r["A_test"]), ("A_r (↑)", lambda r: r["A_r"]),
                      ("100−A_f (↑)", lambda r: 100.0 - r["A_f"])):
        for i, m in enumerate(methods):
            lines.append(f"| {label if i == 0 else ''} | {m} | " + " | ".join(cell(k, m, fn) for k in ks) + " |")
    lines += ["", "Retrieval (cosine, retain gallery; retain→retain and forget→retain, %), MIA (forget samples called "
              "'member' by the loss attack, %; forget-vs-unseen-test AUC, %), steps to forget, wall time split "
              "(s: probes / importance+set-up / unlearning / evaluation), peak memory (MiB), evaluation and raw forward "
              "speed (images/s). Mean over seeds.", ""]
    header = ("| k | Method | R@1/5/10/mAP retain | R@1/5/10/mAP forget | MIA member % | MIA AUC % | steps | "
              "probes s | importance+set-up s | unlearning s | eval s | peak MiB | eval img/s | raw fwd img/s |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for k in ks:
        for m in methods:
            rs = [r for r in runs if r["k"] == k and r["method"] == m]
            if not rs:
                continue
            mean = lambda f: float(np.mean([f(r) for r in rs]))  # noqa: E731
            ret = lambda case: "/".join(f"{mean(lambda r: r['retrieval'][case][x]):.1f}" for x in ("R@1", "R@5", "R@10", "mAP"))  # noqa: E501,E731
            mia = f"{mean(lambda r: 100 * r['mia']['forget_member_rate']):.1f}" if rs[0].get("mia") else "–"
            auc = f"{mean(lambda r: 100 * r['mia']['forget_auc']):.1f}" if rs[0].get("mia", {}).get("forget_auc") is not None else "–"
            ph = lambda key: f"{mean(lambda r: r['seconds_phases'].get(key, 0.0)):.1f}"  # noqa: E731
            peak = mean(lambda r: max(v["peak_mib"] for v in r["peak_memory"].values()) if "unlearning" in r["peak_memory"] else r["peak_memory"]["peak_mib"])
            lines.append(
                f"| {k} | {m} | {ret('retain')} | {ret('forget')} | {mia} | {auc} | {mean(lambda r: r['steps']):.0f} | "
                f"{ph('probes')} | {ph('importance_setup')} | {ph('unlearning')} | {ph('evaluation')} | {peak:.0f} | "
                f"{mean(lambda r: r['eval_images_per_second']):.0f} | {raw_forward:.0f} |"
            )
    return "\n".join(lines) + "\n"


def caption_for(profile: dict, device: torch.device, runs: list[dict], complete: bool, wall: float) -> str:
    seeds = sorted({r["seed"] for r in runs})
    ks = sorted({r["k"] for r in runs})
    subset = "" if complete and ks == sorted(profile["ks"]) else " PARTIAL RUN (only the rows below were run)."
    reductions = []
    if profile["retain_eval_size"]:
        reductions.append(f"A_r, retrieval, consistency and MIA members on a fixed subsample of {profile['retain_eval_size']} retain images")
    if profile["test_eval_size"]:
        reductions.append(f"A_test and MIA non-members on a fixed subsample of {profile['test_eval_size']} test images")
    reductions.append(f"probes with {profile['probe_num_steps']} PGD iterations")
    reductions.append(f"StructGuard importance over {profile['importance_num_samples']} probe samples")
    if profile["max_steps"] and profile["max_steps"] > 0:  # Trainer: max_steps overrides the pass cap
        reductions.append(f"at most {profile['max_steps']} optimisation steps per method (stops earlier at A_f = 0)")
    else:
        reductions.append(f"at most {profile['num_train_epochs']:g} passes over the probe set")
    return (
        f"**Table ({profile_name(profile)} profile, {device.type}).** Unlearning of k random training images; "
        f"k = {ks}, seeds = {seeds} (forget set, probes and method seed), mean ± std (sample std) over seeds.{subset} "
        f"Settings applied to every method alike: {'; '.join(reductions)}. Total wall time {wall / 60:.1f} min."
    )


def profile_name(profile: dict) -> str:
    return "CUDA (paper settings)" if profile.get("device") == "cuda" else "CPU (reduced)"


def write_outputs(output_dir, args, profile, device, runs, sources, setup_seconds, raw_forward, total_started,
                  complete: bool) -> dict:
    wall = time.perf_counter() - total_started
    caption = caption_for(profile, device, runs, complete, wall)
    content = {
        "caption": caption,
        "complete": complete,
        "profile": args.profile,
        "settings": profile,
        "arguments": {k: v for k, v in vars(args).items()},
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "before_source": sources["before"],
        "anchors": sources["anchors"],
        "setup_seconds": setup_seconds,
        "raw_forward_images_per_second": raw_forward,
        "total_seconds": wall,
        "versions": library_versions(),
        "summary": summarise(runs),
        "runs": [{k: v for k, v in r.items()} for r in runs],
    }
    (output_dir / "benchmark.json").write_text(json.dumps(content, indent=1, default=str))
    table = markdown_table(runs, caption, raw_forward)
    (output_dir / "table.md").write_text(table)
    if complete:
        print(table)
    return content


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", default=None, help="The Before model (empty: train the cached default).")
    parser.add_argument("--cifar_stem", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--text_encoder", default=None, help="Anchor text encoder (default: the pipeline's).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="Default: the profile's.")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--ablations", nargs="*", default=[], choices=sorted(ABLATIONS))
    parser.add_argument("--example_methods", nargs="*", default=["l2ul", "structguard"],
                        help="Methods shown in the retrieval grid (with Before).")
    parser.add_argument("--ks", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--retain_eval_size", type=int, default=None)
    parser.add_argument("--test_eval_size", type=int, default=None)
    parser.add_argument("--probe_num_steps", type=int, default=None)
    parser.add_argument("--importance_num_samples", type=int, default=None)
    parser.add_argument("--num_train_epochs", type=float, default=None)
    parser.add_argument("--max_steps", type=int, default=None, help="Step cap; <= 0 = none.")
    parser.add_argument("--drift_every_steps", type=int, default=None)
    parser.add_argument("--mia", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--eval_seed", type=int, default=0, help="Seed of the fixed retain/test subsamples.")
    parser.add_argument("--output_dir", default="benchmarks/results/cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
