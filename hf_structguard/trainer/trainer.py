"""``UnlearningTrainer``: a ``transformers.Trainer`` whose dataset is the probe set and whose loss is a method's.

Each optimisation step pairs the Trainer's probe minibatch with a forget minibatch chosen by global step
(:mod:`~hf_structguard.trainer.batching`), hands both to the registered method's ``compute_loss``, and logs
every named loss term. After every step, callbacks evaluate the forget accuracy through the deployed path
(stopping at exactly 0 % from the second pass on) and the structural drift ``mean |S_unl − S_ori|`` on a fixed
probe subset. Multi-process runs (``accelerate launch``) keep probes, anchors, importance, stopping decisions
and, at the end, BatchNorm buffers identical on all ranks.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from ..errors import UnlearningDiverged, UserInputError
from ..lora import add_lora, is_peft_model, plain_copy
from ..methods import get_method
from ..structure import AnchorSpace
from .batching import ProbeDataset, cyclic_batch
from .callbacks import (
    ForgetAccuracyStopping,
    IntervalPrinterCallback,
    IntervalProgressCallback,
    MethodHooksCallback,
    StructureDriftCallback,
    forget_accuracy_level,
)
from .config import UnlearningConfig

METHOD_STATE_NAME = "method_state.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"


def resume_kind(value: str | bool | None) -> str | None:
    """What a ``resume_from_checkpoint`` value asks for: None (start afresh: None, False, "", "false"),
    "latest" (True, "true", "latest": the newest checkpoint) or "path" (a checkpoint folder)."""
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    return "latest" if value is True or str(value).lower() in ("true", "latest") else "path"


def resolve_checkpoint(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint folder that ``resume_from_checkpoint`` names (:func:`resume_kind`), the newest
    ``checkpoint-N`` of ``output_dir`` for "latest"; UserInputError when there is none."""
    kind = resume_kind(value)
    if kind is None:
        return None
    if kind == "latest":
        latest = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if latest is None:
            raise UserInputError(
                f"--resume_from_checkpoint {value}: no checkpoint-N folder in {output_dir}; checkpoints are written "
                "with --save_strategy steps (run without --resume_from_checkpoint to start afresh)"
            )
        return latest
    if not os.path.isfile(os.path.join(str(value), TRAINER_STATE_NAME)):
        raise UserInputError(f"--resume_from_checkpoint {value}: not a checkpoint folder (no {TRAINER_STATE_NAME}); "
                             "give a checkpoint-N folder, or 'true' for the latest one")
    return str(value)


def checkpoint_is_final(checkpoint: str | os.PathLike) -> bool:
    """Whether ``checkpoint`` was saved at the end of its run (stopped at A_f = 0, or at the step cap)."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    stopping = state.stateful_callbacks.get(ForgetAccuracyStopping.__name__) or {}
    stopped = (stopping.get("attributes") or {}).get("stopped_step") is not None
    return stopped or (state.max_steps > 0 and state.global_step >= state.max_steps)


@dataclass
class UnlearningResult:
    """Outcome of :meth:`UnlearningTrainer.train`."""

    steps: int  # optimisation steps in total (global step at the end)
    stopped_at_zero: bool  # training stopped because the forget accuracy reached 0 %
    stopped_step: int | None  # global step at which it stopped (None: ran to the cap)
    forget_accuracy: float | None  # forget accuracy (%) after the last step
    seconds: float  # wall time of this train() call

    def to_dict(self) -> dict:
        return asdict(self)


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


class UnlearningTrainer(Trainer):
    """Trainer for one unlearning run (see the module docstring).

    Args:
        model: the Before model (a ``StructGuardForImageClassification``); it is unlearned in place.
        args: an :class:`UnlearningConfig`; ``args.method`` picks the method from the registry.
        forget_images, forget_labels: the forget set, (k, 3, H, W) floats in [0, 1] and (k,) int64.
        probes: the ``ProbeSet`` (images, targets); the Trainer's dataset.
        anchors: an ``AnchorSet`` (needed by structguard with semantic anchors; enables drift logging).
        retain_dataset: only for methods that need the retain set (oracle).
        callbacks: extra ``TrainerCallback``s.
        reference_model: the model whose structure and weights the method preserves (S_ori, ψ^ori, θ0, the
            importances; e.g. the original Before model in a sequence of deletion requests). Default: ``model``
            as it starts.

    With ``args.peft`` the model is wrapped in a LoRA adapter (:func:`~hf_structguard.lora.add_lora`) after the
    method's ``prepare`` (so that a projector it adds is trained and saved with the adapter); a model that
    already is a peft model keeps training its adapter. ``self.model`` is then the ``PeftModel``.

    Attributes: ``original_model`` (frozen plain deep copy of the reference model, eval mode), ``method``,
    ``unlearning_result`` (:class:`UnlearningResult`, after :meth:`train`).
    """

    def __init__(
        self,
        model: nn.Module,
        args: UnlearningConfig,
        forget_images: torch.Tensor,
        forget_labels: torch.Tensor,
        probes: Any,
        anchors: Any = None,
        retain_dataset: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        reference_model: nn.Module | None = None,
    ) -> None:
        if not isinstance(args, UnlearningConfig):
            raise TypeError(f"args must be an UnlearningConfig, got {type(args).__name__}")
        if forget_images.ndim != 4 or len(forget_images) == 0:
            raise ValueError(f"forget_images must be a non-empty (k, C, H, W) tensor, got {tuple(forget_images.shape)}")
        if forget_labels.shape != (len(forget_images),):
            raise ValueError(f"forget_labels must have shape ({len(forget_images)},), got {tuple(forget_labels.shape)}")
        method_cls = get_method(args.method)
        model.to(args.device)
        reference = model if reference_model is None else reference_model
        self.original_model = plain_copy(reference).to(args.device).eval().requires_grad_(False)
        self.forget_images = forget_images.detach().float().cpu()
        self.forget_labels = forget_labels.detach().long().cpu()
        self.probes = probes
        self.anchors = anchors
        self.method = method_cls(args, self.original_model, anchors=anchors, retain_dataset=retain_dataset)
        self.method.probes = probes
        self.method.forget_images = self.forget_images
        self.method.forget_labels = self.forget_labels
        self.method.prepare(model)
        if args.peft and not is_peft_model(model):
            with torch.random.fork_rng(devices=[]):  # the adapter's init from args.seed, not from what ran before
                torch.manual_seed(args.seed)
                model = add_lora(model, args.lora_rank, args.lora_alpha, args.lora_target_modules)

        self._term_sums: dict[str, float] = {}
        self._term_steps = 0
        self._step_terms: dict[str, torch.Tensor] = {}
        self._pending: dict[str, float] = {}
        self.seconds_phases: dict[str, float] = {"checks": 0.0}
        self.unlearning_result: UnlearningResult | None = None
        self._drift = self._build_drift_probe(model, args)
        level = forget_accuracy_level(args.forget_accuracy_target)
        if level is None:
            raise ValueError("forget_accuracy_target='retrained' needs its level estimated from the Before model first "
                             "(hf_structguard.pipeline.resolve_forget_accuracy_target; scripts/run.py does it)")
        self.stopping = ForgetAccuracyStopping(
            self.forget_accuracy,
            self._record,
            check_from_epoch=args.stop_check_from_epoch,
            enabled=args.stop_at_zero_forget_accuracy,
            level=level,
        )
        internal: list[TrainerCallback] = [MethodHooksCallback(self)]
        if self._drift is not None:
            internal.append(StructureDriftCallback(self.structural_drift, self._record, args.drift_every_steps))
        internal.append(self.stopping)
        super().__init__(
            model=model,
            args=args,
            train_dataset=ProbeDataset(probes.images, probes.targets),
            data_collator=_collate,
            callbacks=internal + list(callbacks or []),
        )
        self.loss_is_scaled_for_ga = False
        for verbose, quiet in ((ProgressCallback, IntervalProgressCallback), (PrinterCallback, IntervalPrinterCallback)):
            if self.pop_callback(verbose) is not None:
                self.add_callback(quiet(args.log_print_steps))

    # ---- setup ----
    def _build_drift_probe(
        self, model: nn.Module, args: UnlearningConfig
    ) -> tuple[AnchorSpace, torch.Tensor, torch.Tensor] | None:
        """(anchor space, fixed probe subset, its S_ori) for drift logging; None without anchors or when off."""
        anchors = self.method.anchor_matrix()
        if anchors is None or args.drift_num_probes == 0:
            return None
        space = AnchorSpace(anchors, model.config.num_features, model.config.feature_map_seed).to(args.device)
        generator = torch.Generator().manual_seed(args.seed)
        rows = torch.randperm(len(self.probes.images), generator=generator)[: args.drift_num_probes]
        images = self.probes.images[rows]
        with torch.no_grad():
            s_ori = torch.cat(
                [
                    space.feature_structure(self.original_model.features(chunk.to(args.device)))
                    for chunk in images.split(256)
                ]
            )
        return space, images, s_ori

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """``torch.optim.SGD`` over the method's parameter groups, momentum and weight decay from the config."""
        if self.optimizer is None:
            self.optimizer = torch.optim.SGD(
                self.method.param_groups(self.model),
                lr=self.args.learning_rate,
                momentum=self.args.momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    # ---- one step ----
    def forget_batch(self, step: int) -> dict[str, torch.Tensor]:
        """This process's forget minibatch of global ``step`` (on the training device)."""
        batch = cyclic_batch(
            self.forget_images,
            self.forget_labels,
            self.args.forget_batch_size or self.args.per_device_train_batch_size,
            step,
            rank=self.args.process_index,
            world_size=self.args.world_size,
            seed=self.args.seed,
        )
        return {key: value.to(self.args.device) for key, value in batch.items()}

    def _call_in_forward(self, model: nn.Module, fn):
        """Run ``fn(unwrapped_model)`` inside the wrapper's forward so that DDP synchronises the gradients."""
        inner = self.accelerator.unwrap_model(model)
        if inner is model:
            return fn(inner)
        missing = object()
        own_forward = inner.__dict__.get("forward", missing)  # e.g. accelerate's mixed-precision wrapper

        def restore() -> None:
            if own_forward is missing:
                inner.__dict__.pop("forward", None)
            else:
                inner.forward = own_forward

        def run_once():
            restore()  # calls of model(...) made by fn reach the real forward
            return fn(inner)

        inner.forward = run_once
        try:
            return model()
        finally:
            restore()

    def _method_loss(self, model: nn.Module, probe_batch: dict, forget_batch: dict, step: int) -> dict:
        self.method.set_train_modes(model, step)
        return self.method.compute_loss(model, probe_batch, forget_batch, step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The method's total loss on (probe batch ``inputs``, forget batch of this step); terms kept for logging."""
        step = self.state.global_step
        forget_batch = self.forget_batch(step)
        with self.accelerator.autocast():
            terms = self._call_in_forward(model, lambda inner: self._method_loss(inner, inputs, forget_batch, step))
        if "loss" not in terms:
            raise ValueError(f"method {self.args.method!r} returned no 'loss' term (got {sorted(terms)})")
        self._step_terms = {key: value.detach().float() for key, value in terms.items() if key != "loss"}
        return (terms["loss"], terms) if return_outputs else terms["loss"]

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The step's forward and backward; its loss terms are averaged over processes for logging, and a
        non-finite loss, term or gradient stops the run (:class:`UnlearningDiverged`) before the update, with the
        buffers (BatchNorm statistics) the step's forward changed put back."""
        buffers_before = [buffer.detach().clone() for buffer in model.buffers()]
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.batchnorm == "keep_stats":
            self._restore_batchnorm_statistics()
        keys = sorted(self._step_terms)
        gradients_finite = torch.stack(
            [torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None]
            or [torch.tensor(True, device=loss.device)]
        ).all()
        local = [*(self._step_terms[key].reshape(()) for key in keys), loss.detach().float().reshape(()),
                 gradients_finite.float()]
        *values, mean_loss, finite_share = self.accelerator.reduce(torch.stack(local), reduction="mean").tolist()
        if not all(math.isfinite(value) for value in (*values, mean_loss)) or finite_share < 1.0:
            bad = [key for key, value in zip((*keys, "loss"), (*values, mean_loss)) if not math.isfinite(value)]
            with torch.no_grad():
                for buffer, before in zip(model.buffers(), buffers_before):
                    buffer.copy_(before)
            raise UnlearningDiverged(
                f"method {self.args.method!r} diverged at step {self.state.global_step + 1}: non-finite "
                f"{', '.join(bad) or 'gradients'}. The run stops before that update (the model keeps the weights of "
                "the step before). Lower --learning_rate"
                + (", or bound the deletion (--deletion_loss nearest_wrong; structguard, adv, l2ul)."
                   if self.args.deletion_loss == "ascent" else "."),
                step=self.state.global_step + 1,
            )
        for key, value in zip(keys, values):
            self._term_sums[key] = self._term_sums.get(key, 0.0) + value
        self._term_steps += int(bool(keys))
        return loss

    @torch.no_grad()
    def _restore_batchnorm_statistics(self) -> None:
        """Put the reference model's BatchNorm running statistics back (``batchnorm="keep_stats"``)."""
        original = dict(self.original_model.named_buffers())
        for name, buffer in self.accelerator.unwrap_model(self.model).named_buffers():
            if name in original and (name.endswith("running_mean") or name.endswith("running_var")):
                buffer.copy_(original[name])

    # ---- checks (eval mode, identical on all ranks) ----
    def _sync_buffers(self) -> None:
        """Broadcast rank 0's buffers (BatchNorm statistics) to all ranks."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer.data, src=0)

    def _broadcast_value(self, value: float) -> float:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            tensor = torch.tensor([value], dtype=torch.float64)
            dist.broadcast(tensor, src=0)
            return float(tensor.item())
        return value

    @torch.no_grad()
    def forget_accuracy(self) -> float:
        """Forget accuracy (%) of the current model in eval mode through its deployed path ``model(x)``."""
        started = time.perf_counter()
        self._sync_buffers()
        model = self.model
        was_training = model.training
        model.eval()
        try:
            correct = 0
            for images, labels in zip(self.forget_images.split(256), self.forget_labels.split(256)):
                logits = model(images.to(self.args.device)).logits
                correct += int((logits.argmax(dim=1).cpu() == labels).sum())
        finally:
            model.train(was_training)
        self.seconds_phases["checks"] += time.perf_counter() - started
        return self._broadcast_value(100.0 * correct / len(self.forget_labels))

    @torch.no_grad()
    def structural_drift(self) -> dict[str, float]:
        """``structural_drift``: mean |S_unl − S_ori| on the fixed probe subset (S_unl through the projector when
        the model has one, else ``norm(M(g))·Aᵀ``); with a projector also ``structural_drift_features``, the
        same read directly from ``norm(M(g))``."""
        started = time.perf_counter()
        space, images, s_ori = self._drift
        self._sync_buffers()
        model = self.model
        was_training = model.training
        model.eval()
        try:
            features = torch.cat([model.features(chunk.to(self.args.device)) for chunk in images.split(256)])
            drift = {"structural_drift": (space.model_structure(model, features) - s_ori).abs().mean().item()}
            if getattr(model, "projector", None) is not None:
                drift["structural_drift_features"] = (space.feature_structure(features) - s_ori).abs().mean().item()
        finally:
            model.train(was_training)
        self.seconds_phases["checks"] += time.perf_counter() - started
        return {key: self._broadcast_value(value) for key, value in drift.items()}

    def _record(self, metrics: dict[str, float]) -> None:
        self._pending.update(metrics)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of each loss term since the last log and this step's checks to training logs."""
        if "loss" in logs and "train_runtime" not in logs:
            if self._term_steps:
                logs.update({key: value / self._term_steps for key, value in self._term_sums.items()})
                self._term_sums, self._term_steps = {}, 0
            logs.update(self._pending)
            self._pending = {}
        super().log(logs, start_time)

    # ---- train, checkpoints ----
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Runs the unlearning loop; sets :attr:`unlearning_result`; BatchNorm buffers end equal on all ranks.

        ``resume_from_checkpoint``: a checkpoint folder, or True/"true"/"latest" for the newest one in
        ``output_dir`` (:func:`resolve_checkpoint`). Resuming restores the weights, the optimiser, the step, the
        RNG, the method's state (importance) and the stopping state, so the run ends exactly as an
        uninterrupted one; a checkpoint saved at the end of a run (:func:`checkpoint_is_final`) is restored
        without any further step.
        """
        start = time.perf_counter()
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None and checkpoint_is_final(checkpoint):
            self._load_from_checkpoint(checkpoint)
            self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
            output = TrainOutput(self.state.global_step, float("nan"), {})
        else:
            output = super().train(resume_from_checkpoint=checkpoint, **kwargs)
        self._sync_buffers()
        self.model.eval()
        self.unlearning_result = UnlearningResult(
            steps=self.state.global_step,
            stopped_at_zero=self.stopping.stopped_step is not None,
            stopped_step=self.stopping.stopped_step,
            forget_accuracy=self.stopping.last_accuracy,
            seconds=time.perf_counter() - start,
        )
        return output

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        state = self.method.state_dict()
        if state and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_file(
                {key: value.detach().cpu().contiguous() for key, value in state.items()},
                os.path.join(folder, METHOD_STATE_NAME),
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Also restores the method's state (importance) and the stopping callback's."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, METHOD_STATE_NAME)
        self.method.load_state_dict(load_file(path) if os.path.isfile(path) else {})
        state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
        saved = state.stateful_callbacks.get(ForgetAccuracyStopping.__name__) or {}
        for name, value in (saved.get("attributes") or {}).items():
            setattr(self.stopping, name, value)
