"""The benchmark's grid and its resumable cell cache.

A cell is one (Before model, row, k, seed) result, ``<output_dir>/cells/<model tag>/<row>/k<k>-s<seed>.json``,
written atomically with the fingerprint of every setting it depends on; a cell whose fingerprint matches is
read back instead of recomputed. Probe sets are cached the same way under ``<output_dir>/probes/<model tag>``.
"""

from __future__ import annotations

import argparse
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
from hf_structguard.evaluation import EvalSets
from hf_structguard.hub import library_versions
from hf_structguard.arguments import DataArguments, ModelArguments
from hf_structguard.pipeline import load_before_model, load_data
from hf_structguard.probes import ProbeSet, probe_config_for, probes_for_config, target_hit_rate
from hf_structguard.trainer import UnlearningConfig

from _common import attribute_anchors, locate, recorded, write_json_atomic
from _rows import LEVELS, known_rows, run_before_cell, run_method_cell, select_rows

logger = logging.getLogger("benchmark")

#: Config fields that do not change a result (left out of fingerprints).
VOLATILE_CONFIG_FIELDS = (
    "output_dir", "logging_dir", "run_name", "save_strategy", "save_total_limit", "resume_from_checkpoint",
    "logging_steps", "log_print_steps", "disable_tqdm",
)
#: Config fields added after cells were written, with the value that reproduces the behaviour from before
#: they existed: at that value they are left out of fingerprints, so older cells stay valid.
ADDED_CONFIG_FIELDS = {
    "importance_normalization": "none", "deletion_weight_growth": 0.0, "alignment_scaling": "constant",
    "forget_accuracy_target": "zero", "probe_min_hit_rate": 0.0, "per_sample_stopping": False,
    "deletion_margin": 0.0,
}


# ------------------------------------------------------------------------------------------ grid, models
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


# ---------------------------------------------------------------------------------------------- cache
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
    old, new = flatten(cell.get("settings", {})), flatten(json.loads(json.dumps(settings, default=str)))
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    logger.warning("%s: settings changed (%s); recomputing", path, ", ".join(changed) or "fingerprint")
    return None


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


#: Config fields renamed after cells were written: fingerprints keep the old name, so older cells stay valid.
RENAMED_CONFIG_FIELDS = {"preset": "structguard_preset"}


def config_settings(config: UnlearningConfig) -> dict:
    settings = {k: v for k, v in config.to_dict().items() if k not in RENAMED_CONFIG_FIELDS.values()}
    return {
        RENAMED_CONFIG_FIELDS.get(k, k): v
        for k, v in settings.items()
        if k not in VOLATILE_CONFIG_FIELDS and not (k in ADDED_CONFIG_FIELDS and v == ADDED_CONFIG_FIELDS[k])
    }


def cached_probes(folder: Path, before, forget_images, forget_labels, num_classes, config, settings) -> tuple:
    """``(ProbeSet, info)`` for this model/forget set/PGD setting, generated once and kept under ``folder``.

    ``info``: ``num``, ``target_hit_rate`` (% of probes the Before model classifies as their target),
    ``epsilon``, ``step_size`` and ``seconds`` (generation time, also when read back from the cache).
    """
    probe_settings = {**settings, "probe_config": dataclasses.asdict(probe_config_for(config))}
    if config.probe_min_hit_rate > 0:  # the radius is searched from probe_epsilon down (keys of fixed radii unchanged)
        probe_settings["probe_min_hit_rate"] = config.probe_min_hit_rate
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


def run_cell(output_dir: Path, tag: str, row: str, settings: dict, environment: dict, compute) -> dict:
    """The cached cell for ``settings``, else ``compute()``'s result written as that cell."""
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


# ----------------------------------------------------------------------------------------------- grid run
def fixed_subsample(total: int, size: int | None, seed: int = 0) -> np.ndarray | None:
    if size is None or size >= total:
        return None
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])


@dataclasses.dataclass
class Grid:
    """What every cell of one benchmark run shares: where cells go, the settings, data and anchors."""

    output_dir: Path
    profile: dict
    rows: list[str]
    dataset: str | None  # as the cells record it
    eval_seed: int
    num_classes: int
    anchors: object
    anchor_settings: dict
    base: UnlearningConfig
    environment: dict

    def eval_sets(self, train: tuple, test: tuple, forget_indices: list[int]) -> EvalSets:
        """Test, retain (the training set without ``forget_indices``) and forget sets of one forget set."""
        index = torch.as_tensor(forget_indices)
        keep = torch.ones(len(train[1]), dtype=torch.bool)
        keep[index] = False
        return EvalSets(test=test, retain=(train[0][keep], train[1][keep]), forget=(train[0][index], train[1][index]),
                        retain_subsample=self.profile["retain_eval_size"], seed=self.eval_seed)

    def run_model_cells(self, tag: str, source: str, before, digest: str, k: int, seed: int,
                        forget_indices: list[int], sets: EvalSets) -> None:
        """The Before cell and every row's cell of one Before model on one forget set."""
        shared = {
            "model": {"tag": tag, "source": recorded(source), "weights_sha256": digest},
            "dataset": self.dataset, "k": k, "seed": seed, "forget_indices": [int(i) for i in forget_indices],
            "eval": {key: self.profile[key] for key in ("retain_eval_size", "test_eval_size", "mia")}
            | {"eval_seed": self.eval_seed},
        }
        probe_key = {key: shared[key] for key in ("model", "dataset", "k", "seed", "forget_indices")}
        run_cell(self.output_dir, tag, "before", {**shared, "row": "before"}, self.environment,
                 lambda: run_before_cell(before, sets, self.profile["mia"]))
        for row in self.rows:
            method, overrides = known_rows()[row]
            config = self.base.for_method(method, seed=seed, **overrides)
            settings = {**shared, "row": row, "levels": list(LEVELS), "anchors": self.anchor_settings,
                        "config": config_settings(config)}

            def compute(row=row, config=config):
                probes, info = cached_probes(self.output_dir / "probes" / tag, before, *sets.forget,
                                             self.num_classes, config, probe_key)
                return run_method_cell(row, before, config, sets, probes, info, self.anchors, self.profile["mia"])

            run_cell(self.output_dir, tag, row, settings, self.environment, compute)


def load_befores(data, models: dict[str, str], cifar_stem: bool | None, device: torch.device) -> dict[str, tuple]:
    """``{tag: (Before model on device, in eval mode; sha256 of its weights)}``; all must share one image size."""
    befores = {}
    for tag, source in models.items():
        model, _ = load_before_model(data, ModelArguments(model_name_or_path=locate(source), cifar_stem=cifar_stem))
        befores[tag] = (model.to(device).eval(), tensors_digest(model.state_dict()))
    sizes = {model.config.image_size for model, _ in befores.values()}
    if len(sizes) != 1:
        raise ValueError(f"the Before models expect different image sizes {sorted(sizes)}; run them separately")
    return befores


def resolve_device(name: str) -> torch.device:
    """``name``, or the CPU (with a warning) when CUDA is asked for and not available."""
    if name == "cuda" and not torch.cuda.is_available():
        logger.warning("--device cuda requested but CUDA is not available: running on the CPU")
        return torch.device("cpu")
    return torch.device(name)


def run_grid(args: argparse.Namespace, profile: dict) -> Path:
    """Fills the cell cache for the requested models, rows, k and seeds; returns the cache folder."""
    device = resolve_device(profile["device"])
    rows = select_rows(args.rows, args.ablations)
    models = parse_models(args.model_name_or_path)
    data = load_data(DataArguments(dataset=locate(args.dataset), retain_eval_size=profile["retain_eval_size"],
                                   mia=profile["mia"]))
    befores = load_befores(data, models, args.cifar_stem, device)
    size = next(iter(befores.values()))[0].config.image_size
    anchors = attribute_anchors(data, args.text_encoder)
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
    grid = Grid(
        output_dir=Path(args.output_dir), profile=profile, rows=rows, dataset=recorded(args.dataset),
        eval_seed=args.eval_seed, num_classes=data.num_classes, anchors=anchors,
        anchor_settings={"encoder": anchors.metadata.get("encoder"),
                         "embeddings_sha256": tensors_digest({"anchors": anchors.embeddings})},
        base=base,
        environment={"versions": library_versions(), "platform": platform.platform(), "device": str(device),
                     "cpu_threads": torch.get_num_threads(), "profile": args.profile},
    )
    train = data.tensors("train", None, size)
    test_rows = fixed_subsample(len(data.test), profile["test_eval_size"], seed=args.eval_seed)
    test = data.tensors("test", None if test_rows is None else test_rows.tolist(), size)
    for seed, k in grid_order(profile["ks"], profile["seeds"]):
        forget = select_forget_set(len(train[1]), k=k, seed=seed)
        sets = grid.eval_sets(train, test, forget.indices)
        for tag, (before, digest) in befores.items():
            grid.run_model_cells(tag, models[tag], before, digest, k, seed, forget.indices, sets)
    shutil.rmtree(base.output_dir, ignore_errors=True)  # nothing is saved there (save_strategy "no")
    return grid.output_dir
