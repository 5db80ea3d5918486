"""The benchmark's rows: which (method, preset or variant) rows exist, in which order, and how one row's cell
is computed — the Before evaluation or one unlearning run with its accuracies at the forget levels."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time

import torch

from hf_structguard.errors import UnlearningDiverged
from hf_structguard.evaluation import EvalSets, evaluate_model
from hf_structguard.methods import benchmark_rows, get_method
from hf_structguard.structure import ALIGNMENT_MEASURES
from hf_structguard.trainer import AccuracyAtForgetLevels, UnlearningConfig, run_unlearning

logger = logging.getLogger("benchmark")

#: Forget accuracies (%) at which A_test and A_r are recorded (besides step 0).
LEVELS = (75.0, 50.0, 25.0, 0.0)

#: Rows only the benchmark runs: name -> (registry method, UnlearningConfig overrides).
VARIANT_ROWS: dict[str, tuple[str, dict]] = {
    "l2ul[frozen-bn]": ("l2ul", {"batchnorm": "frozen"}),
    # what the default's changes are worth on their own: the paper's deletion in the default, the default's
    # deletion in L2UL
    "structguard[ascent]": ("structguard", {"deletion_loss": "ascent"}),
    "l2ul[nearest-wrong]": ("l2ul", {"deletion_loss": "nearest_wrong"}),
    # the default before per-sample stopping (docs/methods.md#per-sample-stopping)
    "structguard[no-per-sample-stopping]": ("structguard", {"per_sample_stopping": False}),
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
#: The order of ``DEFAULT_ROWS`` is the run order within a (model, k, seed) cell, cheapest first.
DEFAULT_ROWS = ["fisher", "neggrad", "adv", "l2ul", "rawp", "oracle", "structguard", "structguard[reference]"]
#: ``--ablations`` groups: shorthands for rows.
ABLATIONS = {
    "components": ["structguard[-SA]", "structguard[-SR]", "structguard[-CR]", "structguard[-SA-SR-CR]"],
    "alignment": [f"structguard[{m}]" for m in ALIGNMENT_MEASURES if m != "cosine"],
    "anchors": ["structguard[visual]"],
}


def known_rows() -> dict[str, tuple[str, dict]]:
    """Every row: each registered method and preset (``hf_structguard.methods.benchmark_rows``), then the
    benchmark's own variants."""
    return {**benchmark_rows(), **VARIANT_ROWS}


def select_rows(rows: list[str], ablations: list[str] = ()) -> list[str]:
    """Row names in run order; unknown rows, groups or config fields fail before any work."""
    names = list(dict.fromkeys(list(rows) + [name for group in ablations for name in _group(group)]))
    known_fields = {f.name for f in dataclasses.fields(UnlearningConfig)}
    rows = known_rows()
    for name in names:
        if name not in rows:
            raise ValueError(f"unknown row {name!r}; choose from {sorted(rows)}")
        method, overrides = rows[name]
        get_method(method)
        missing = sorted(set(overrides) - known_fields)
        if missing:
            raise ValueError(f"row {name!r} needs UnlearningConfig field(s) {missing}, absent from this version")
    return names


def _group(group: str) -> list[str]:
    if group not in ABLATIONS:
        raise ValueError(f"unknown ablation group {group!r}; choose from {sorted(ABLATIONS)}")
    return ABLATIONS[group]


def row_order(names) -> list[str]:
    """``names`` without repeats, Before first, then as in :data:`DEFAULT_ROWS` and :func:`known_rows`, unknown last."""
    rank = {name: i for i, name in enumerate(dict.fromkeys(["before", *DEFAULT_ROWS, *known_rows()]))}
    return sorted(set(names), key=lambda name: (rank.get(name, len(rank)), name))


def run_before_cell(before, sets: EvalSets, mia: bool) -> dict:
    """The Before model's evaluation: the row ``before``."""
    metrics = evaluate_model(before, sets, retrieval=True, mia=mia)
    seconds = metrics.pop("seconds")
    return {"final": metrics, "steps": 0, "reached_zero": metrics["A_f"] == 0.0,
            "seconds_phases": {"evaluation": seconds}}


def run_method_cell(row: str, before, config: UnlearningConfig, sets: EvalSets, probes, probe_info: dict,
                    anchors, mia: bool) -> dict:
    """One unlearning run from a copy of ``before`` with accuracies at the forget levels and the final evaluation."""
    method, _ = known_rows()[row]
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
    metrics = evaluate_model(model, sets, reference_model=before, retrieval=True, mia=mia and diverged_step is None)
    evaluation_seconds = metrics.pop("seconds")
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
        "seconds_phases": _phase_seconds(info, probe_info, levels.seconds, evaluation_seconds),
        "log_history": info["log_history"],
    }


def _phase_seconds(info: dict, probe_info: dict, level_seconds: float, final_evaluation_seconds: float) -> dict:
    """A run's wall time by phase, from the trainer's ``info`` and the probe and evaluation times."""
    phases = info["seconds_phases"]
    hooks = phases.get("method_hooks", 0.0)  # inside train(): e.g. StructGuard's importance
    return {
        "probes": probe_info["seconds"],
        "importance_setup": phases.get("prepare", 0.0) + hooks,  # S_ori, projector, MAS, Fisher scrub; importance
        "unlearning": info["seconds"] - hooks - level_seconds,
        "evaluation": final_evaluation_seconds + level_seconds,  # final evaluation + the level evaluations
        "raw": phases,
    }
