"""Trainer callbacks of an unlearning run: method hooks, structural drift, and the stop at forget accuracy 0."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback
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


class ForgetAccuracyStopping(TrainerCallback, ExportableState):
    """Evaluates the forget accuracy after every step and stops training the moment it is exactly 0 %.

    Stopping is allowed only for steps of pass ``check_from_epoch`` (0-based) and later — by default from the
    second pass over the probe set on (method.md §6); the accuracy is recorded every step regardless.

    Args:
        evaluate: returns the forget accuracy in percent (eval mode, deployed path).
        record: receives ``{"forget_acc": value}`` for the step's log entry.
        check_from_epoch: first pass whose steps may stop training.
        enabled: False records the accuracy but never stops.

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
    ) -> None:
        self.evaluate = evaluate
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
        if self.enabled and accuracy == 0.0 and pass_index(state.epoch) >= self.check_from_epoch:
            self.stopped_step = state.global_step
            control.should_training_stop = True
            control.should_save = control.should_save or args.save_strategy == SaveStrategy.STEPS

    def state(self) -> dict:
        """The resumable state (``ExportableState``; restored by the trainer, see ``UnlearningTrainer``)."""
        return {"args": {"check_from_epoch": self.check_from_epoch, "enabled": self.enabled},
                "attributes": {"stopped_step": self.stopped_step, "last_accuracy": self.last_accuracy}}
