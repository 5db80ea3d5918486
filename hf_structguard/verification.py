"""Verify forgetting against retraining from scratch (``scripts/verify.py``, ``benchmarks/verification.py``).

For one forget set: N reference models retrained from scratch without the forget images (same recipe as the
Before model, seeds 0..N-1, cached by data, forget set, recipe and seed), N unlearning runs of every method
(seeds 0..N-1, all from the same Before model), and for every model its per-example statistic on the forget
images, its accuracies and its relearn time. :func:`summarize` turns them into the NeurIPS 2023 challenge's
forgetting quality and final score (:mod:`hf_structguard.evaluation.forgetting_quality`).

Every model's measurements are a *cell*, one JSON file under ``<output_dir>/cells``; a cell that exists for
the same inputs is read, not recomputed, so an interrupted verification resumes where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from accelerate import PartialState

from .arguments import AnchorArguments, DataArguments, ModelArguments
from .data import ForgetSet, ImageClassificationData
from .errors import UserInputError, option_errors
from .evaluation import EvalSets, accuracy, evaluate_model, predict
from .evaluation.forgetting_quality import final_score, forgetting_quality, logit_scaled_confidence
from .methods import get_method
from .modeling import StructGuardForImageClassification
from .pipeline import (
    _cache_dir,
    _eval_sets,
    build_anchors,
    load_before_model,
    load_data,
    resolve_attributes,
    resolve_forget_accuracy_target,
    select_forget,
    settle_config,
    unlearning_config,
)
from .pretrain import PretrainArguments, pretrain_classifier
from .probes import probes_for_config
from .trainer import UnlearningConfig, run_unlearning
from .trainer.callbacks import forget_accuracy_level

logger = logging.getLogger(__name__)

#: The file ``pretrain_classifier`` writes next to a Before model; its ``recipe`` is how to retrain it.
TRAIN_RESULT_FILE = "train_result.json"
#: Written next to each cached retrained reference: its seed, recipe and the training-row ids it saw.
REFERENCE_FILE = "reference.json"


@dataclass
class VerifyArguments:
    """How to verify against retraining (``scripts/verify.py``)."""

    methods: list[str] | None = field(
        default=None, metadata={"help": "Methods to verify on the same forget set (default: --method)."}
    )
    num_models: int = field(
        default=4,
        metadata={"help": "N: unlearning runs per method (seeds 0..N-1) and models retrained from scratch without the "
                  "forget set (seeds 0..N-1). The competition used 512; with few models the score is coarse."},
    )
    retrain_recipe: str | None = field(
        default=None,
        metadata={"help": "JSON file of the Before model's training recipe (scripts/pretrain.py's options, or its "
                  "train_result.json). Default: the train_result.json saved with the Before model."},
    )
    relearn_steps: int = field(
        default=50,
        metadata={"help": "Budget of the relearn test: full-batch SGD steps on the forget set (original labels)."},
    )
    relearn_learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate of the relearn test."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where retrained references are cached. Default: $HF_STRUCTGUARD_CACHE/retrained "
                  "(~/.cache/hf_structguard/retrained)."},
    )

    def __post_init__(self) -> None:
        if self.num_models < 2:
            raise ValueError(
                f"num_models must be >= 2 (the attacks compare two groups of models), got {self.num_models}"
            )
        if self.relearn_steps < 1 or self.relearn_learning_rate <= 0:
            raise ValueError(f"relearn_steps must be >= 1 and relearn_learning_rate > 0, got {self.relearn_steps} "
                             f"and {self.relearn_learning_rate}")


def read_recipe(path: str | os.PathLike) -> PretrainArguments:
    """A :class:`PretrainArguments` from a JSON file of its fields or a ``train_result.json`` (its ``recipe``)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"retrain recipe {path}: not a readable JSON file ({error})") from error
    recipe = content.get("recipe", content) if isinstance(content, dict) else None
    known = {f.name for f in dataclasses.fields(PretrainArguments)}
    if not isinstance(recipe, dict) or not set(recipe) <= known:
        raise UserInputError(
            f"retrain recipe {path}: expected an object of training options ({', '.join(sorted(known))})"
        )
    return PretrainArguments(**recipe)


def recipe_file(before_source: str | None, explicit: str | None) -> Path:
    """The recipe file: ``explicit``, else the Before folder's ``train_result.json``; UserInputError if neither."""
    if explicit:
        if not Path(explicit).is_file():
            raise UserInputError(f"--retrain_recipe {explicit}: no such file")
        return Path(explicit)
    saved = Path(before_source.removeprefix("local-dir:")) / TRAIN_RESULT_FILE if before_source else None
    if saved is None or not saved.is_file():
        raise UserInputError(f"the Before model {before_source} carries no training recipe ({TRAIN_RESULT_FILE}); "
                             "give --retrain_recipe FILE (scripts/pretrain.py's options as JSON) to retrain it")
    return saved


def retain_data(data: ImageClassificationData, forget: ForgetSet) -> tuple[ImageClassificationData, list[int]]:
    """``data`` whose train split lacks the forget rows, and the train-row ids it keeps."""
    rows = forget.retain_indices(len(data.train)).tolist()
    return dataclasses.replace(data, train=data.train.select(rows)), rows


def reference_key(data: ImageClassificationData, forget: ForgetSet, recipe: PretrainArguments) -> str:
    """Cache key of a retrained reference: data fingerprint, forget set, recipe (its seed included)."""
    return recipe.cache_key(f"{data.source} | {len(data.train)} rows | without {forget.fingerprint()}")


def retrained_reference(
    data: ImageClassificationData, forget: ForgetSet, recipe: PretrainArguments, seed: int, cache_dir: Path
) -> StructGuardForImageClassification:
    """A model trained from scratch by ``recipe`` (seed ``seed``) on the train split without the forget rows;
    trained once, then read from ``cache_dir``."""
    recipe = dataclasses.replace(recipe, seed=seed, progress_bar=False)
    folder = cache_dir / reference_key(data, forget, recipe)
    if (folder / REFERENCE_FILE).exists():
        logger.info("Retrained reference seed %d: cached in %s", seed, folder)
    else:
        logger.info("Retraining reference seed %d without the %d forget images into %s", seed, forget.k, folder)
        train, rows = retain_data(data, forget)
        _, metrics = pretrain_classifier(train, recipe, folder)
        if PartialState().is_main_process:
            (folder / REFERENCE_FILE).write_text(json.dumps({
                "seed": seed, "recipe": metrics["recipe"], "test_accuracy": metrics["test_accuracy"],
                "training_rows": rows,
            }))
        PartialState().wait_for_everyone()
    return StructGuardForImageClassification.from_pretrained(folder)


def relearn_time(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, target: float, steps: int,
                 learning_rate: float) -> dict:
    """Fine-tune a copy of ``model`` on ``(images, labels)`` (full batch, SGD momentum 0.9, BatchNorm statistics
    frozen) until its accuracy on them reaches ``target`` %; ``{"steps": steps taken (0: already there) or None if
    the budget ran out, "accuracy": accuracy at the end}``."""
    model = copy.deepcopy(model).eval()
    parameters = [parameter.requires_grad_(True) for parameter in model.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=learning_rate, momentum=0.9)
    device = parameters[0].device
    images, labels = images.to(device), labels.to(device)
    score, step = accuracy(predict(model, images)[0], labels), 0
    while score < target and step < steps:
        step += 1
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images).logits, labels).backward()
        optimizer.step()
        score = accuracy(predict(model, images)[0], labels)
    return {"steps": step if score >= target else None, "accuracy": score}


def measure(model: nn.Module, sets: EvalSets, before_forget_accuracy: float, verify_args: VerifyArguments) -> dict:
    """One model's cell: accuracies, the per-example statistic on the forget images, the relearn time."""
    metrics = evaluate_model(model, sets, retrieval=False, mia=False)
    images, labels = sets.forget
    return {
        "A_test": metrics["A_test"],
        "A_r": metrics["A_r"],
        "A_f": metrics["A_f"],
        "statistic": logit_scaled_confidence(predict(model, images)[0], labels).tolist(),
        "relearn": relearn_time(model, images, labels, before_forget_accuracy, verify_args.relearn_steps,
                                verify_args.relearn_learning_rate),
    }


def cached_cell(path: Path, key: str, compute) -> dict:
    """The cell at ``path`` when it was computed for ``key``, else ``compute()`` written there."""
    if path.exists():
        cell = json.loads(path.read_text())
        if cell.get("key") == key:
            return cell
    cell = {"key": key, **compute()}
    if PartialState().is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cell))
    return cell


def config_key(*parts) -> str:
    """A short stable hash of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def summarize(unlearned: list[dict], retrained: list[dict]) -> dict:
    """Forgetting quality, accuracy ratios, final score, mean accuracies and relearn times of one method."""
    quality = forgetting_quality(
        np.array([cell["statistic"] for cell in unlearned]), np.array([cell["statistic"] for cell in retrained])
    )

    def mean(cells: list[dict], key: str) -> float:
        return float(np.mean([cell[key] for cell in cells]))

    scores = final_score(quality, mean(unlearned, "A_r"), mean(retrained, "A_r"), mean(unlearned, "A_test"),
                         mean(retrained, "A_test"))
    return {
        "forgetting_quality": quality,
        **scores,
        **{key: mean(unlearned, key) for key in ("A_f", "A_r", "A_test")},
        **relearn_summary(unlearned),
        "num_models": len(unlearned),
    }


def relearn_summary(cells: list[dict]) -> dict:
    """Mean relearn steps over the models that relearned within the budget, how many did, mean final accuracy."""
    steps = [cell["relearn"]["steps"] for cell in cells if cell["relearn"]["steps"] is not None]
    return {
        "relearn_steps": float(np.mean(steps)) if steps else None,
        "relearned": f"{len(steps)}/{len(cells)}",
        "relearn_accuracy": float(np.mean([cell["relearn"]["accuracy"] for cell in cells])),
    }


def format_table(entries: list[tuple[str, dict]], retrained: dict) -> str:
    """A Markdown table: one row per (label, method entry of ``verification.json``) and the retrained references."""
    rows = [
        "| method | stop at | forgetting quality | retain ratio | test ratio | final score | A_f | A_r | A_test "
        "| relearn steps (relearned) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in entries:
        target = entry["forget_accuracy_target"]
        stop = target if target == "zero" else f"{target} ({entry['stop_level']:.1f})"
        rows.append(
            f"| {label} | {stop} | {entry['forgetting_quality']:.3f} | {entry['retain_ratio']:.3f} | "
            f"{entry['test_ratio']:.3f} | {entry['final_score']:.3f} | {entry['A_f']:.1f} | {entry['A_r']:.1f} | "
            f"{entry['A_test']:.1f} | {_steps(entry)} |"
        )
    rows.append(f"| retrained (N = {retrained['num_models']}) | — | 1 (by definition) | 1 | 1 | 1 | "
                f"{retrained['A_f']:.1f} | {retrained['A_r']:.1f} | {retrained['A_test']:.1f} | {_steps(retrained)} |")
    return "\n".join(rows)


def _steps(entry: dict) -> str:
    steps = entry["relearn_steps"]
    return f"{'—' if steps is None else f'{steps:.1f}'} ({entry['relearned']})"


def run_verification(
    data_args: DataArguments,
    model_args: ModelArguments,
    anchor_args: AnchorArguments,
    config: UnlearningConfig,
    verify_args: VerifyArguments,
    rows: dict[str, UnlearningConfig] | None = None,
) -> dict:
    """Verify every method of ``verify_args.methods`` against N retrained references; writes
    ``<output_dir>/verification.json`` and ``verification.md`` and returns the JSON's content.

    ``rows``: instead, a label -> config of each row (e.g. one method with two presets); ``config`` then gives
    the output folder only."""
    output_dir = Path(config.output_dir)
    with option_errors():
        method_configs = rows or {name: config.for_method(name) for name in verify_args.methods or [config.method]}
    methods = list(method_configs)
    if model_args.model_name_or_path:  # a given Before model: its recipe is checked before any work
        recipe_file(model_args.model_name_or_path, verify_args.retrain_recipe)
    data = load_data(data_args)
    forget = select_forget(data, data_args)
    attributes = None if anchor_args.anchors else resolve_attributes(data, anchor_args)
    logger.info("Verification: %s on %d forget images, N = %d", ", ".join(methods), forget.k, verify_args.num_models)
    before, before_source = load_before_model(data, model_args)
    recipe = read_recipe(recipe_file(before_source, verify_args.retrain_recipe))
    sets = _eval_sets(data, forget, before.config.image_size, data_args)
    before_metrics = evaluate_model(before, sets, retrieval=False, mia=False)
    anchors = build_anchors(data, anchor_args, attributes)
    cache_dir = Path(verify_args.cache_dir) if verify_args.cache_dir else _cache_dir() / "retrained"
    shared = (data.source, forget.fingerprint(), before_source, data_args.retain_eval_size, data_args.eval_seed,
              verify_args.relearn_steps, verify_args.relearn_learning_rate)

    def cell(kind: str, seed: int, key: str, compute) -> dict:
        def logged():
            logger.info("%s: model %d/%d", kind, seed + 1, verify_args.num_models)
            return compute()

        return cached_cell(output_dir / "cells" / kind / f"seed-{seed}.json", key, logged)

    retrained = []
    for seed in range(verify_args.num_models):
        retrained.append(cell("retrained", seed, config_key(shared, dataclasses.asdict(recipe), seed), lambda: measure(
            retrained_reference(data, forget, recipe, seed, cache_dir), sets, before_metrics["A_f"], verify_args)))

    probe_cache: dict = {}
    results = {}
    for name, method_config in method_configs.items():
        target = method_config.forget_accuracy_target
        method_config = settle_config(method_config, len(data.train) - forget.k)
        method_config = resolve_forget_accuracy_target(method_config, before_metrics["A_test"])
        cells = []
        for seed in range(verify_args.num_models):
            seeded = unlearning_config(
                dataclasses.replace(method_config, seed=seed), output_dir / "checkpoints" / name, None
            )
            key = config_key(shared, _stable_fields(seeded))
            cells.append(cell(f"{name}@{target}", seed, key, lambda: _unlearn_and_measure(
                seeded, before, sets, data.num_classes, anchors, probe_cache, before_metrics["A_f"], verify_args)))
        results[name] = {
            "forget_accuracy_target": target,
            "stop_level": forget_accuracy_level(method_config.forget_accuracy_target),
            **summarize(cells, retrained),
            "steps": float(np.mean([c["steps"] for c in cells])),
            "reached_target": f"{sum(c['stopped'] for c in cells)}/{len(cells)}",
        }
    verification = {
        "forget_set": {"k": forget.k, "mode": forget.mode},
        "before": {key: before_metrics[key] for key in ("A_test", "A_r", "A_f")}
        | {"source": model_args.model_name_or_path or f"embedded default ({Path(before_source).name})"},
        "retrained": {**{key: float(np.mean([c[key] for c in retrained])) for key in ("A_f", "A_r", "A_test")},
                      **relearn_summary(retrained), "num_models": len(retrained)},
        "methods": results,
        "settings": {**{key: value for key, value in dataclasses.asdict(verify_args).items() if key != "cache_dir"},
                     "recipe": dataclasses.asdict(recipe), "dataset_source": data.source},
    }
    if PartialState().is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "verification.json").write_text(json.dumps(verification, indent=1))
        table = format_table(list(results.items()), verification["retrained"])
        (output_dir / "verification.md").write_text(table + "\n")
        print(table)
        print(f"Verification: {output_dir / 'verification.json'}")
    return verification


def _stable_fields(config: UnlearningConfig) -> dict:
    """The config's fields that decide an unlearning run (not where it writes)."""
    return {key: value for key, value in config.to_dict().items() if key not in ("output_dir", "logging_dir")}


def _unlearn_and_measure(config, before, sets, num_classes, anchors, probe_cache, before_forget_accuracy,
                         verify_args) -> dict:
    images, labels = sets.forget
    probes = probes_for_config(before, images, labels, num_classes, config, probe_cache)
    retain = sets.retain if get_method(config.method).needs_retain else None
    model, info = run_unlearning(copy.deepcopy(before), config, images, labels, probes, anchors=anchors,
                                 retain_dataset=retain)
    return {**measure(model, sets, before_forget_accuracy, verify_args), "steps": info["steps"],
            "stopped": info["stopped_at_zero"]}
