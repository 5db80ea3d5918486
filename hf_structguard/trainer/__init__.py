"""Unlearning with the ``transformers`` Trainer: config, trainer, paired batching, callbacks, one-call runner.

The trainer module (``transformers.Trainer``, ``datasets``) is imported on first use, so that importing
:class:`UnlearningConfig` (the scripts' ``--help``) does not pay for it.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from ..lora import trainable_parameters
from .batching import ProbeDataset, cyclic_batch, cyclic_indices
from .callbacks import AccuracyAtForgetLevels, ForgetAccuracyStopping, MethodHooksCallback, StructureDriftCallback
from .config import UnlearningConfig

_LAZY = ("UnlearningResult", "UnlearningTrainer")


def __getattr__(name: str):
    if name in _LAZY:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_unlearning(
    model: nn.Module,
    method: str | UnlearningConfig,
    forget_images,
    forget_labels,
    probes,
    anchors=None,
    retain_dataset=None,
    output_dir: str | None = None,
    callbacks=None,
    reference_model: nn.Module | None = None,
    **config_overrides: Any,
) -> tuple[nn.Module, dict]:
    """Unlearn ``forget_images`` from ``model``; returns ``(unlearned_model, info)``.

    ``method`` is a registry name (the config is built from ``config_overrides``, unset fields taking the
    method's defaults) or a ready :class:`UnlearningConfig` (``config_overrides`` and ``output_dir`` then
    replace its fields). The model is changed in place and returned in eval mode (with its projector, for
    structguard). ``info`` holds ``steps``, ``stopped_at_zero``, ``stopped_step``, ``forget_accuracy``,
    ``seconds`` (see :class:`UnlearningResult`), ``seconds_phases`` (``prepare``: trainer set-up incl. S_ori
    and the projector; ``checks``: per-step forget accuracy and drift; ``method_hooks``: the method's step hooks, e.g. importance),
    ``log_history`` (per-step loss terms, ``forget_acc``, ``structural_drift``), ``config`` (the resolved
    hyperparameters) and ``trainable_parameters`` (values the optimiser updated: adapter factors and saved
    modules with ``peft``). ``reference_model``: see :class:`UnlearningTrainer` (default: ``model`` as it
    starts). With ``peft`` the returned model is the ``PeftModel`` (base + adapter). The config's
    ``resume_from_checkpoint`` (a checkpoint folder, or "true" for the latest in ``output_dir``) resumes a run.
    """
    started = time.perf_counter()
    if isinstance(method, UnlearningConfig):
        changes = {**config_overrides, **({"output_dir": output_dir} if output_dir is not None else {})}
        args = method.for_method(method.method, **changes) if changes else method
    else:
        args = UnlearningConfig(output_dir=output_dir or "unlearning_output", method=method, **config_overrides)
    from .trainer import UnlearningTrainer

    trainer = UnlearningTrainer(
        model,
        args,
        forget_images,
        forget_labels,
        probes,
        anchors=anchors,
        retain_dataset=retain_dataset,
        callbacks=callbacks,
        reference_model=reference_model,
    )
    prepare_seconds = time.perf_counter() - started
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    info = trainer.unlearning_result.to_dict()
    info["seconds_phases"] = {"prepare": prepare_seconds, **trainer.seconds_phases}
    info["log_history"] = list(trainer.state.log_history)
    info["config"] = args.to_dict()
    info["trainable_parameters"] = trainable_parameters(trainer.model)
    return trainer.model, info


__all__ = [
    "AccuracyAtForgetLevels",
    "ForgetAccuracyStopping",
    "MethodHooksCallback",
    "ProbeDataset",
    "StructureDriftCallback",
    "UnlearningConfig",
    "UnlearningResult",
    "UnlearningTrainer",
    "cyclic_batch",
    "cyclic_indices",
    "run_unlearning",
]
