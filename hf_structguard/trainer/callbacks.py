"""Trainer callbacks of an unlearning run: method hooks, structural drift, the stop at a forget accuracy level."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import SaveStrategy


def pass_index(epoch: float) -> int:
    """0-based pass over the probe set that the step ending at fractional ``state.epoch`` belonged to."""
    return max(math.ceil(round(epoch, 8)) - 1, 0)


class MethodHooksCallback(TrainerCallback):
    """Calls the method's ``on_step_begin``/``on_step_end`` with the unwrapped model and the step index.

    The time spent in the hooks (e.g. structguard's importance) accumulates in
    ``trainer.seconds_phases["method_hooks"]``.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def _timed(self, hook: Callable, step: int) -> None:
        started = time.perf_counter()
        hook(self.trainer.model, step, self.trainer)
        phases = self.trainer.seconds_phases
        phases["method_hooks"] = phases.get("method_hooks", 0.0) + time.perf_counter() - started

    def on_step_begin(self, args, state, control, **kwargs):
        self._timed(self.trainer.method.on_step_begin, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._timed(self.trainer.method.on_step_end, state.global_step - 1)


class StructureDriftCallback(TrainerCallback):
    """Every ``every`` steps, records ``measure()`` (e.g. ``{"structural_drift": ...}``) through ``record``."""

    def __init__(self, measure: Callable[[], dict[str, float]], record: Callable[[dict], None], every: int = 1) -> None:
        self.measure = measure
        self.record = record
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.record(self.measure())


FORGET_ACCURACY_TARGETS = ("zero", "retrained")


def forget_accuracy_level(target: str) -> float | None:
    """The forget accuracy (%) at or below which training stops, for an ``UnlearningConfig.forget_accuracy_target``:
    "zero" -> 0, a number in [0, 100] -> itself, "retrained" -> None (an estimate the caller must fill in,
    :func:`hf_structguard.pipeline.resolve_forget_accuracy_target`). ValueError for anything else."""
    if target in FORGET_ACCURACY_TARGETS:
        return 0.0 if target == "zero" else None
    try:
        level = float(target)
    except (TypeError, ValueError):
        level = math.nan
    if not 0.0 <= level <= 100.0:
        raise ValueError(
            f"forget_accuracy_target must be 'zero', 'retrained' or a percentage in [0, 100], got {target!r}"
        )
    return level


class ForgetAccuracyStopping(TrainerCallback, ExportableState):
    """Evaluates the forget accuracy after every step and stops training the moment it is at or below ``level``
    (exactly 0 % by default).

    Stopping is allowed only for steps of pass ``check_from_epoch`` (0-based) and later — by default from the
    second pass over the probe set on (docs/concepts.md#stopping); the accuracy is recorded every step regardless.

    Args:
        evaluate: returns the forget accuracy in percent (eval mode, deployed path).
        record: receives ``{"forget_acc": value}`` for the step's log entry.
        check_from_epoch: first pass whose steps may stop training.
        enabled: False records the accuracy but never stops.
        level: the forget accuracy (%) at or below which training stops.

    After training: ``stopped_step`` (global step at which it stopped, or None) and ``last_accuracy``. Both are
    saved in every checkpoint's ``trainer_state.json`` (:meth:`state`) and restored on resume; with
    ``save_strategy="steps"`` the step that stops training is checkpointed, so a resumed run knows it had ended.
    """

    def __init__(
        self,
        evaluate: Callable[[], float],
        record: Callable[[dict], None] | None = None,
        check_from_epoch: int = 1,
        enabled: bool = True,
        level: float = 0.0,
    ) -> None:
        self.evaluate = evaluate
        self.level = level
        self.record = record
        self.check_from_epoch = check_from_epoch
        self.enabled = enabled
        self.stopped_step: int | None = None
        self.last_accuracy: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        accuracy = float(self.evaluate())
        self.last_accuracy = accuracy
        if self.record is not None:
            self.record({"forget_acc": accuracy})
        if self.enabled and accuracy <= self.level and pass_index(state.epoch) >= self.check_from_epoch:
            self.stopped_step = state.global_step
            control.should_training_stop = True
            control.should_save = control.should_save or args.save_strategy == SaveStrategy.STEPS

    def state(self) -> dict:
        """The resumable state (``ExportableState``; restored by the trainer, see ``UnlearningTrainer``)."""
        return {"args": {"check_from_epoch": self.check_from_epoch, "enabled": self.enabled, "level": self.level},
                "attributes": {"stopped_step": self.stopped_step, "last_accuracy": self.last_accuracy}}


def _print_due(state, logs: dict | None, every: int) -> bool:
    """Print a log entry only every ``every`` steps, and the end-of-training summary."""
    return bool(logs) and ("train_runtime" in logs or state.global_step % every == 0)


class IntervalProgressCallback(ProgressCallback):
    """The Trainer's progress bar, writing the logged loss terms only every ``every`` steps (every step still
    reaches ``state.log_history`` and ``log_history.json``)."""

    def __init__(self, every: int = 25) -> None:
        super().__init__()
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if _print_due(state, logs, self.every):
            super().on_log(args, state, control, logs=logs, **kwargs)


class IntervalPrinterCallback(PrinterCallback):
    """:class:`~transformers.PrinterCallback` (used without progress bars) at the same interval."""

    def __init__(self, every: int = 25) -> None:
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if _print_due(state, logs, self.every):
            super().on_log(args, state, control, logs=logs, **kwargs)


class AccuracyAtForgetLevels(TrainerCallback):
    """Accuracy on fixed evaluation sets at step 0 and when the forget accuracy first reaches each level.

    At ``on_train_begin`` (step 0, after the method's set-up) and after every step, evaluates the forget
    accuracy ``A_f`` on ``forget``; the first time ``A_f <= level`` it evaluates every set of ``eval_sets``
    once and records them for that level (levels passed in one step are recorded at that step, levels
    already met at step 0 at step 0). Evaluation is deterministic: eval mode, the deployed path
    ``model(x).logits``, no gradients, fixed batches; the model's train/eval mode is restored.

    Args:
        forget: ``(images, labels)`` of the forget set (original labels).
        eval_sets: name -> ``(images, labels)``, e.g. ``{"A_test": ..., "A_r": ...}``.
        levels: forget accuracies in percent.
        batch_size: evaluation batch size.

    After training: ``records`` (``{"start": {...}, "<level>": {...}}``, each ``{"step", "A_f", <name>: %}``;
    unreached levels are absent) and ``seconds`` (wall time of these evaluations).
    """

    def __init__(
        self,
        forget: tuple[Any, Any],
        eval_sets: dict[str, tuple[Any, Any]],
        levels: tuple[float, ...] = (75.0, 50.0, 25.0, 0.0),
        batch_size: int = 256,
    ) -> None:
        self.forget = forget
        self.eval_sets = eval_sets
        self.levels = tuple(float(level) for level in levels)
        self.batch_size = batch_size
        self.records: dict[str, dict] = {}
        self.seconds = 0.0

    @staticmethod
    def level_key(level: float) -> str:
        return f"{level:g}"

    def _accuracy(self, model, images, labels) -> float:
        device = next(model.parameters()).device
        correct = 0
        for chunk, target in zip(images.split(self.batch_size), labels.split(self.batch_size)):
            correct += int((model(chunk.to(device)).logits.argmax(dim=1).cpu() == target.cpu()).sum())
        return 100.0 * correct / len(labels)

    def _check(self, model, step: int, start: bool = False) -> None:
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                forget_accuracy = self._accuracy(model, *self.forget)
                new = [self.level_key(level) for level in self.levels
                       if self.level_key(level) not in self.records and forget_accuracy <= level]
                if start or new:
                    record = {"step": step, "A_f": forget_accuracy}
                    record.update({name: self._accuracy(model, *pair) for name, pair in self.eval_sets.items()})
                    for key in (["start"] if start else []) + new:
                        self.records[key] = dict(record)
        finally:
            model.train(was_training)
        self.seconds += time.perf_counter() - started

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._check(model, state.global_step, start=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._check(model, state.global_step)
