"""The unlearning-method interface and its registry.

A method turns one paired minibatch (probes + forget samples) into named loss terms. The trainer only
talks to this interface and never names a method: adding a method is one module in ``methods/`` that
subclasses :class:`UnlearningMethod` and decorates it with :func:`register_method`. The class also carries
the method's facts that other parts read from the registry: its ``description`` (model cards, docs), whether
it ``needs_retain`` data, its option checks (:meth:`UnlearningMethod.check_config`) and its ``presets``
(benchmark rows: :func:`benchmark_rows`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

#: Config defaults shared by every baseline (docs/methods.md#methods, CIFAR-10): SGD lr 1e-3, momentum 0.9, weight decay
#: 1e-4; probe ε 4.0 and N_adv 20 (read only by the probe-based baselines).
BASELINE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "probe_epsilon": 4.0,
    "probes_per_image": 20,
    "batchnorm": "separate",  # the reference forwards forget and probe minibatches separately (docs/methods.md#presets)
    "stop_check_from_epoch": 0,  # the reference lets the baselines stop from the first step
}

METHOD_REGISTRY: dict[str, type[UnlearningMethod]] = {}

#: The preset a method with presets uses when none is chosen (``UnlearningConfig.preset``'s default).
DEFAULT_PRESET = "default"


def register_method(name: str):
    """Class decorator that registers an :class:`UnlearningMethod` subclass under ``name``."""

    def decorator(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
        if not (isinstance(cls, type) and issubclass(cls, UnlearningMethod)):
            raise TypeError(f"@register_method({name!r}) needs an UnlearningMethod subclass, got {cls!r}")
        if not cls.description:
            raise TypeError(f"@register_method({name!r}): {cls.__qualname__} needs a description (model cards, docs)")
        if cls.presets and DEFAULT_PRESET not in cls.presets:
            raise TypeError(f"@register_method({name!r}): presets {sorted(cls.presets)} lack {DEFAULT_PRESET!r}")
        if name in METHOD_REGISTRY and METHOD_REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {METHOD_REGISTRY[name].__qualname__}")
        cls.name = name
        METHOD_REGISTRY[name] = cls
        return cls

    return decorator


def get_method(name: str) -> type[UnlearningMethod]:
    """The registered method class called ``name``; ValueError listing the known names otherwise."""
    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(METHOD_REGISTRY)) or "(none registered)"
        raise ValueError(f"unknown unlearning method {name!r}; choose one of: {known}") from None


def check_option(ok: bool, message: str) -> None:
    """ValueError with ``message`` unless ``ok`` (option checks of configs and methods)."""
    if not ok:
        raise ValueError(message)


def check_choices(config: Any, allowed: dict[str, tuple[str, ...]]) -> None:
    """ValueError naming the first field of ``config`` whose value is set but not among its allowed values."""
    for name, choices in allowed.items():
        value = getattr(config, name)
        check_option(value is None or value in choices, f"{name} must be one of {choices}, got {value!r}")


def benchmark_rows() -> dict[str, tuple[str, dict[str, Any]]]:
    """Benchmark rows offered by the registered methods: row name -> (method name, ``UnlearningConfig`` changes).

    Every method gives the row ``name`` (its defaults and default preset); each further preset gives
    ``name[preset]`` with the change ``{"preset": preset}``. In registration order.
    """
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, cls in METHOD_REGISTRY.items():
        rows[name] = (name, {})
        for preset in cls.presets:
            if preset != DEFAULT_PRESET:
                rows[f"{name}[{preset}]"] = (name, {"preset": preset})
    return rows


class UnlearningMethod:
    """Base class of a pluggable unlearning loss.

    Attributes set by the constructor: ``args`` (the :class:`UnlearningConfig`), ``original_model`` (a frozen
    copy of the Before model in eval mode), ``anchors`` (an ``AnchorSet`` or None), ``retain_dataset``
    (only for methods with ``needs_retain``; such methods draw their own retain batches, deterministically
    from ``step`` — see :func:`hf_structguard.trainer.batching.cyclic_batch`).
    Attributes the trainer sets before :meth:`prepare`: ``probes`` (the ``ProbeSet``), ``forget_images`` and
    ``forget_labels`` (the whole forget set, CPU tensors).

    In multi-process runs the model passed to :meth:`compute_loss` is the unwrapped model, called inside the
    DDP forward (so gradients are synchronised); hooks run on every rank and must be deterministic across
    ranks (same data, seeded generators), so that all ranks keep identical parameters.

    Class attributes:
        name: registry name (set by :func:`register_method`).
        description: one paragraph on what the method does, for model cards and docs (required).
        defaults: :class:`UnlearningConfig` field values applied when the user left a field unset
            (``learning_rate``, ``momentum``, ``weight_decay``, ``probe_epsilon``, ...), see docs/methods.md#methods.
        presets: named sets of further defaults (``args.preset`` picks one; ``"default"`` is required when
            there are any); data, not code paths. Each further preset is a benchmark row ``name[preset]``.
        needs_anchors / needs_retain: the trainer raises a clear error when they are missing; a method that
            needs retain data is not retain-free (its model card says so).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_anchors: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = False

    probes: Any = None
    forget_images: torch.Tensor | None = None
    forget_labels: torch.Tensor | None = None

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ValueError when ``config`` (an :class:`UnlearningConfig` with defaults filled) sets options this
        method cannot run with; called by ``UnlearningConfig`` before any work. Default: no further checks."""

    def __init__(
        self,
        args: Any,
        original_model: nn.Module,
        anchors: Any = None,
        retain_dataset: Any = None,
    ) -> None:
        if self.needs_anchors and anchors is None:
            raise ValueError(f"method {self.name!r} needs anchors (an AnchorSet); pass anchors=...")
        if self.needs_retain and retain_dataset is None:
            raise ValueError(f"method {self.name!r} needs the retain set; pass retain_dataset=...")
        self.args = args
        self.original_model = original_model
        self.anchors = anchors
        self.retain_dataset = retain_dataset

    def prepare(self, model: nn.Module) -> None:
        """Called once before the optimizer is created (e.g. add a projector, precompute targets)."""

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups; default: every trainable parameter at ``args.learning_rate``."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.args.learning_rate}]

    def set_train_modes(self, model: nn.Module, step: int) -> None:
        """Called after the Trainer put ``model`` in train mode, before :meth:`compute_loss`: with
        ``batchnorm="frozen"`` every BatchNorm layer normalises with (and keeps) its running statistics."""
        if self.args.batchnorm == "frozen":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def paired_forward(self, forward, forget_inputs: torch.Tensor, probe_inputs: torch.Tensor):
        """``(forward(forget_inputs), forward(probe_inputs))``: two calls with ``batchnorm="separate"``, else one
        call on the concatenation, split back (tuple outputs are split element-wise)."""
        if self.args.batchnorm == "separate":
            return forward(forget_inputs), forward(probe_inputs)
        n = len(forget_inputs)
        joint = forward(torch.cat([forget_inputs, probe_inputs]))
        if isinstance(joint, tuple):
            return tuple(t[:n] for t in joint), tuple(t[n:] for t in joint)
        return joint[:n], joint[n:]

    def compute_loss(
        self, model: nn.Module, probe_batch: dict, forget_batch: dict, step: int
    ) -> dict[str, torch.Tensor]:
        """Named loss terms for one paired minibatch; key ``"loss"`` is the total that is back-propagated.

        Batches are ``{"pixel_values": (n, 3, H, W) float in [0, 1], "labels": (n,) int64}``; probe labels are
        the probes' TARGET classes; the probe batch also carries ``"probe_index"`` (n,), the rows of the
        ``ProbeSet``. ``step`` is the 0-based global optimisation step (``trainer.state.global_step``).
        """
        raise NotImplementedError

    def on_step_begin(self, model: nn.Module, step: int, trainer: Any) -> None:
        """Optional hook before the step's forward pass (e.g. importance estimation at step 1)."""

    def on_step_end(self, model: nn.Module, step: int, trainer: Any) -> None:
        """Optional hook after the optimizer step (e.g. weight perturbations, noise)."""

    def anchor_matrix(self) -> torch.Tensor | None:
        """The (b, d_a) anchors the structure is measured against (for drift logging); None without anchors."""
        return None if self.anchors is None else self.anchors.embeddings

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that make up the method's state (saved in checkpoints as safetensors); default none."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (called on resume, after :meth:`prepare`)."""
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but the checkpoint holds {sorted(state)}")
