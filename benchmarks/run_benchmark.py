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

    # CPU profile, one thread per process; both Before models (tag=source), into one cache
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/run_benchmark.py --profile cpu \\
        --dataset /work/shared/data/cifar10-jpeg \\
        --model_name_or_path generalising=local-dir:/work/shared/checkpoints/resnet18-cifar10-jpeg \\
            memorised=local-dir:/work/shared/checkpoints/resnet18-cifar10-jpeg-memorised \\
        --output_dir benchmarks/results/v2 --rows neggrad l2ul --ks 16 --seeds 0
    # the tables and plots from the cache alone (runs nothing)
    python benchmarks/run_benchmark.py --report --output_dir benchmarks/results/v2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_structguard.data import select_forget_set
from hf_structguard.errors import UnlearningDiverged
from hf_structguard.evaluation import EvalSets, evaluate_model
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
from hf_structguard.probes import ProbeSet, auto_step_size, probe_config_for, probes_for_config, target_hit_rate
from hf_structguard.structure import ALIGNMENT_MEASURES
from hf_structguard.trainer import AccuracyAtForgetLevels, UnlearningConfig, run_unlearning

from _common import write_atomic, write_json_atomic  # benchmarks/_common.py

logger = logging.getLogger("benchmark")

#: Forget accuracies (%) at which A_test and A_r are recorded (besides step 0).
LEVELS = (75.0, 50.0, 25.0, 0.0)

#: Settings per profile. ``cuda`` is the paper's protocol (method.md); ``cpu`` holds the reductions that make
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

#: Benchmark rows: name -> (registry method, UnlearningConfig overrides). The order of ``DEFAULT_ROWS`` is the
#: run order within a (model, k, seed) cell, cheapest first; the lead adds variants here.
ROWS: dict[str, tuple[str, dict]] = {
    "fisher": ("fisher", {}),
    "neggrad": ("neggrad", {}),
    "adv": ("adv", {}),
    "l2ul": ("l2ul", {}),
    "rawp": ("rawp", {}),
    "oracle": ("oracle", {}),
    "structguard": ("structguard", {}),
    "structguard[reference]": ("structguard", {"structguard_preset": "reference"}),
    "l2ul[frozen-bn]": ("l2ul", {"batchnorm": "frozen"}),
    # what the default's changes are worth on their own: the paper's deletion in the default, the default's
    # deletion in L2UL
    "structguard[ascent]": ("structguard", {"deletion_loss": "ascent"}),
    "l2ul[nearest-wrong]": ("l2ul", {"deletion_loss": "nearest_wrong"}),
    # StructGuard ablations (paper Tables 4-6): structure-aware alignment (SA), regularisation (SR),
    # classifier regularisation (CR)
    "structguard[-SA]": ("structguard", {"use_alignment": False}),
    "structguard[-SR]": ("structguard", {"use_regularization": False}),
    "structguard[-CR]": ("structguard", {"use_classifier_reg": False}),
    "structguard[-SA-SR-CR]": (
        "structguard", {"use_alignment": False, "use_regularization": False, "use_classifier_reg": False}
    ),
    **{f"structguard[{m}]": ("structguard", {"alignment_measure": m}) for m in ALIGNMENT_MEASURES if m != "cosine"},
    "structguard[visual]": ("structguard", {"anchor_type": "visual"}),
}
DEFAULT_ROWS = ["fisher", "neggrad", "adv", "l2ul", "rawp", "oracle", "structguard", "structguard[reference]"]
#: ``--ablations`` groups: shorthands for rows.
ABLATIONS = {
    "components": ["structguard[-SA]", "structguard[-SR]", "structguard[-CR]", "structguard[-SA-SR-CR]"],
    "alignment": [f"structguard[{m}]" for m in ALIGNMENT_MEASURES if m != "cosine"],
    "anchors": ["structguard[visual]"],
}
#: Config fields that do not change a result (left out of fingerprints).
VOLATILE_CONFIG_FIELDS = (
    "output_dir", "logging_dir", "run_name", "save_strategy", "save_total_limit", "resume_from_checkpoint",
    "logging_steps", "log_print_steps", "disable_tqdm",
)
#: Config fields added after cells were written, with the value that reproduces the behaviour from before
#: they existed: at that value they are left out of fingerprints, so older cells stay valid.
ADDED_CONFIG_FIELDS = {"importance_normalization": "none", "deletion_weight_growth": 0.0, "alignment_scaling": "constant"}


# -------------------------------------------------------------------------------------------- rows, grid
def select_rows(rows: list[str], ablations: list[str] = ()) -> list[str]:
    """Row names in run order; unknown rows, groups or config fields fail before any work."""
    names = list(dict.fromkeys(list(rows) + [name for group in ablations for name in _group(group)]))
    known_fields = {f.name for f in dataclasses.fields(UnlearningConfig)}
    for name in names:
        if name not in ROWS:
            raise ValueError(f"unknown row {name!r}; choose from {sorted(ROWS)}")
        method, overrides = ROWS[name]
        get_method(method)
        missing = sorted(set(overrides) - known_fields)
        if missing:
            raise ValueError(f"row {name!r} needs UnlearningConfig field(s) {missing}, absent from this version")
    return names


def _group(group: str) -> list[str]:
    if group not in ABLATIONS:
        raise ValueError(f"unknown ablation group {group!r}; choose from {sorted(ABLATIONS)}")
    return ABLATIONS[group]


def grid_order(ks: list[int], seeds: list[int], first_ks: int = 2) -> list[tuple[int, int]]:
    """``(seed, k)`` pairs: the ``first_ks`` smallest k for every seed (seed-major), then the larger k."""
    ks = sorted(ks)
    return [(s, k) for s in seeds for k in ks[:first_ks]] + [(s, k) for s in seeds for k in ks[first_ks:]]


def parse_models(entries: list[str]) -> dict[str, str]:
    """``tag=source`` or ``source`` (tag: the last path component) -> ``{tag: source}``."""
    models: dict[str, str] = {}
    for entry in entries:
        tag, sep, source = entry.partition("=")
        if not sep or ":" in tag or "/" in tag:
            tag, source = Path(entry.split(":", 1)[-1].rstrip("/")).name, entry
        if tag in models:
            raise ValueError(f"two Before models share the tag {tag!r}; name them tag=source")
        models[tag] = source
    return models


# -------------------------------------------------------------------------------------------------- cache
def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and bytes of ``tensors`` (e.g. a state dict)."""
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cell_path(output_dir: Path, tag: str, row: str, k: int, seed: int) -> Path:
    return output_dir / "cells" / tag / row / f"k{k}-s{seed}.json"


def cached_cell(path: Path, settings: dict) -> dict | None:
    """The cell at ``path`` if its settings fingerprint matches; None (with the changed settings logged) if not."""
    if not path.exists():
        return None
    cell = json.loads(path.read_text())
    if cell.get("fingerprint") == fingerprint(settings):
        return cell
    old, new = _flatten(cell.get("settings", {})), _flatten(json.loads(json.dumps(settings, default=str)))
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    logger.warning("%s: settings changed (%s); recomputing", path, ", ".join(changed) or "fingerprint")
    return None


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_settings(config: UnlearningConfig) -> dict:
    return {
        k: v
        for k, v in config.to_dict().items()
        if k not in VOLATILE_CONFIG_FIELDS and not (k in ADDED_CONFIG_FIELDS and v == ADDED_CONFIG_FIELDS[k])
    }


def cached_probes(folder: Path, before, forget_images, forget_labels, num_classes, config, settings) -> tuple:
    """``(ProbeSet, info)`` for this model/forget set/PGD setting, generated once and kept under ``folder``.

    ``info``: ``num``, ``target_hit_rate`` (% of probes the Before model classifies as their target),
    ``epsilon``, ``step_size`` and ``seconds`` (generation time, also when read back from the cache).
    """
    probe_settings = {**settings, "probe_config": dataclasses.asdict(probe_config_for(config))}
    key = fingerprint(probe_settings)
    stem = folder / f"k{settings['k']}-s{settings['seed']}-{key[:12]}"
    meta_path = stem.with_suffix(".json")
    if meta_path.exists():
        return ProbeSet.load(stem.with_suffix(".safetensors")), json.loads(meta_path.read_text())["info"]
    started = time.perf_counter()
    probes = probes_for_config(before, forget_images, forget_labels, num_classes, config)
    seconds = time.perf_counter() - started
    info = {"num": len(probes), "target_hit_rate": target_hit_rate(before, probes),
            "epsilon": probes.config.epsilon, "step_size": probes.config.step_size, "seconds": seconds}
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".safetensors")
    os.close(fd)
    probes.save(tmp)
    os.replace(tmp, stem.with_suffix(".safetensors"))
    write_json_atomic(meta_path, {"settings": probe_settings, "info": info})  # last: marks the set complete
    return probes, info


# ------------------------------------------------------------------------------------------------- cells
def fixed_subsample(total: int, size: int | None, seed: int = 0) -> np.ndarray | None:
    if size is None or size >= total:
        return None
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])


def run_before_cell(before, sets: EvalSets, profile: dict) -> dict:
    metrics = evaluate_model(before, sets, retrieval=True, mia=profile["mia"])
    seconds = metrics.pop("seconds")
    return {"final": metrics, "steps": 0, "reached_zero": metrics["A_f"] == 0.0,
            "seconds_phases": {"evaluation": seconds}}


def run_method_cell(row: str, before, config: UnlearningConfig, sets: EvalSets, probes, probe_info: dict,
                    anchors, profile: dict) -> dict:
    """One unlearning run from a copy of ``before`` with accuracies at the forget levels and the final evaluation."""
    method, _ = ROWS[row]
    retain_index = torch.as_tensor(sets.retain_indices())
    levels = AccuracyAtForgetLevels(
        sets.forget, {"A_test": sets.test, "A_r": (sets.retain[0][retain_index], sets.retain[1][retain_index])},
        levels=LEVELS,
    )
    retain = sets.retain if get_method(method).needs_retain else None
    model, started, diverged_step = copy.deepcopy(before), time.perf_counter(), None
    try:
        model, info = run_unlearning(model, config, sets.forget[0], sets.forget[1], probes,
                                     anchors=anchors, retain_dataset=retain, callbacks=[levels])
    except UnlearningDiverged as error:  # the run ends there, like one at the cap; the model keeps its last weights
        logger.warning("%s: %s", row, error)
        diverged_step = error.step
        info = {"steps": error.step - 1, "stopped_at_zero": False, "seconds": time.perf_counter() - started,
                "seconds_phases": {}, "log_history": []}
        model.eval()
    # a diverged model's outputs may no longer be finite: no membership attack on it
    metrics = evaluate_model(model, sets, reference_model=before, retrieval=True,
                             mia=profile["mia"] and diverged_step is None)
    evaluation = metrics.pop("seconds") + levels.seconds
    phases = info["seconds_phases"]
    hooks = phases.get("method_hooks", 0.0)  # inside train(): e.g. StructGuard's importance
    steps_per_pass = -(-probe_info["num"] // config.per_device_train_batch_size)
    return {
        "final": metrics,
        "steps": info["steps"],
        "passes": info["steps"] / steps_per_pass,
        "reached_zero": metrics["A_f"] == 0.0,
        "stopped_at_zero": info["stopped_at_zero"],
        "diverged_step": diverged_step,  # the step whose loss or gradients were not finite
        "levels": levels.records,
        "probes": probe_info,
        "seconds_phases": {
            "probes": probe_info["seconds"],
            "importance_setup": phases.get("prepare", 0.0) + hooks,  # S_ori, projector, MAS, Fisher scrub; importance
            "unlearning": info["seconds"] - hooks - levels.seconds,
            "evaluation": evaluation,  # final evaluation + the level evaluations
            "raw": phases,
        },
        "log_history": info["log_history"],
    }


def run_grid(args: argparse.Namespace) -> Path:
    """Fills the cell cache for the requested models, rows, k and seeds; returns the cache folder."""
    profile = resolve_profile(args)
    device = torch.device(profile["device"] if profile["device"] != "cuda" or torch.cuda.is_available() else "cpu")
    if profile["device"] == "cuda" and device.type != "cuda":
        logger.warning("--device cuda requested but CUDA is not available: running on the CPU")
    rows = select_rows(args.rows, args.ablations)
    models = parse_models(args.model_name_or_path)
    output_dir = Path(args.output_dir)

    data = load_data(DataArguments(dataset=args.dataset, retain_eval_size=profile["retain_eval_size"],
                                   mia=profile["mia"]))
    befores = {}
    for tag, source in models.items():
        model, _ = load_before_model(data, ModelArguments(model_name_or_path=source, cifar_stem=args.cifar_stem))
        befores[tag] = (model.to(device).eval(), tensors_digest(model.state_dict()))
    sizes = {model.config.image_size for model, _ in befores.values()}
    if len(sizes) != 1:
        raise ValueError(f"the Before models expect different image sizes {sorted(sizes)}; run them separately")
    size = sizes.pop()
    anchor_args = AnchorArguments(text_encoder=args.text_encoder)
    anchors = build_anchors(data, anchor_args, resolve_attributes(data, anchor_args))
    anchor_settings = {"encoder": anchors.metadata.get("encoder"),
                       "embeddings_sha256": tensors_digest({"anchors": anchors.embeddings})}
    train_images, train_labels = data.tensors("train", None, size)
    test_rows = fixed_subsample(len(data.test), profile["test_eval_size"], seed=args.eval_seed)
    test = data.tensors("test", None if test_rows is None else test_rows.tolist(), size)
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
    environment = {"versions": library_versions(), "platform": platform.platform(), "device": str(device),
                   "cpu_threads": torch.get_num_threads(), "profile": args.profile}
    for seed, k in grid_order(profile["ks"], profile["seeds"]):
        forget = select_forget_set(len(train_labels), k=k, seed=seed)
        index = torch.as_tensor(forget.indices)
        keep = torch.ones(len(train_labels), dtype=torch.bool)
        keep[index] = False
        sets = EvalSets(test=test, retain=(train_images[keep], train_labels[keep]),
                        forget=(train_images[index], train_labels[index]),
                        retain_subsample=profile["retain_eval_size"], seed=args.eval_seed)
        for tag, (before, digest) in befores.items():
            shared = {
                "model": {"tag": tag, "source": models[tag], "weights_sha256": digest},
                "dataset": args.dataset, "k": k, "seed": seed, "forget_indices": [int(i) for i in forget.indices],
                "eval": {key: profile[key] for key in ("retain_eval_size", "test_eval_size", "mia")}
                | {"eval_seed": args.eval_seed},
            }
            probe_key = {key: shared[key] for key in ("model", "dataset", "k", "seed", "forget_indices")}
            _run_cell(output_dir, tag, "before", {**shared, "row": "before"}, environment,
                      lambda: run_before_cell(before, sets, profile))
            for row in rows:
                method, overrides = ROWS[row]
                config = base.for_method(method, seed=seed, **overrides)
                settings = {**shared, "row": row, "levels": list(LEVELS), "anchors": anchor_settings,
                            "config": config_settings(config)}

                def compute(row=row, config=config):
                    probes, info = cached_probes(output_dir / "probes" / tag, before, *sets.forget,
                                                 data.num_classes, config, probe_key)
                    return run_method_cell(row, before, config, sets, probes, info, anchors, profile)

                _run_cell(output_dir, tag, row, settings, environment, compute)
    shutil.rmtree(base.output_dir, ignore_errors=True)  # nothing is saved there (save_strategy "no")
    return output_dir


def _run_cell(output_dir: Path, tag: str, row: str, settings: dict, environment: dict, compute) -> dict:
    path = cell_path(output_dir, tag, row, settings["k"], settings["seed"])
    cell = cached_cell(path, settings)
    if cell is not None:
        logger.info("cached: %s", path)
        return cell
    started = time.perf_counter()
    cell = {"model": tag, "row": row, "k": settings["k"], "seed": settings["seed"], **compute(),
            "seconds": time.perf_counter() - started, "environment": environment,
            "settings": settings, "fingerprint": fingerprint(settings)}
    write_json_atomic(path, cell)
    final = cell["final"]
    logger.info("%s %s k=%d seed=%d: A_test %.2f A_r %.2f A_f %.2f, %d steps%s, %.1f s", tag, row, cell["k"],
                cell["seed"], final["A_test"], final["A_r"], final["A_f"], cell["steps"],
                "" if cell["reached_zero"] or row == "before" else " (A_f > 0 at the end)", cell["seconds"])
    return cell


# ------------------------------------------------------------------------------------------------- report
def load_cells(output_dir: Path) -> list[dict]:
    """Every cell under ``output_dir/cells``."""
    return [json.loads(path.read_text()) for path in sorted((output_dir / "cells").glob("*/*/k*-s*.json"))]


def _order(names) -> list[str]:
    rank = {name: i for i, name in enumerate(["before", *DEFAULT_ROWS, *ROWS])}
    return sorted(set(names), key=lambda name: (rank.get(name, len(rank)), name))


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
        rows = _order(row for by_row in by_k.values() for row in by_row)
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
            for row in _order(by_k[k]):
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
                     f"{', '.join(_order(entry['rows']))} |")
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
            for row in _order(by_k[k]):
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
    colours = {row: f"C{i % 10}" for i, row in enumerate(_order(c["row"] for c in cells if c["row"] != "before"))}
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
    names = _order(legend)
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
        config = {k: v for k, v in _flatten(cell["settings"].get("config", {})).items() if k != "seed"}
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


def resolve_profile(args: argparse.Namespace) -> dict:
    overrides = {k: v for k, v in vars(args).items() if k in PROFILES["cpu"] and v is not None}
    profile = {**PROFILES[args.profile], **overrides}
    if profile["max_steps"] is None or profile["max_steps"] <= 0:
        profile["max_steps"] = -1
    return profile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="Dataset folder or Hub id (empty: the embedded digits data).")
    parser.add_argument("--model_name_or_path", nargs="+", action="extend", default=None,
                        help="Before model(s), each 'tag=source' or 'source' (tag: its last path component).")
    parser.add_argument("--cifar_stem", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--text_encoder", default=None, help="Anchor text encoder (default: the pipeline's).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="Default: the profile's.")
    parser.add_argument("--rows", "--methods", nargs="+", default=list(DEFAULT_ROWS),
                        help=f"Rows to run (Before is always evaluated); known: {', '.join(ROWS)}.")
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
        run_grid(args)
    report = write_report(Path(args.output_dir))
    print(report)
    return report


if __name__ == "__main__":
    main()
