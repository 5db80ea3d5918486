"""``UnlearningConfig``: ``TrainingArguments`` plus the unlearning method and its hyperparameters.

Fields left at ``None`` take the chosen method's defaults (the registry class's ``defaults``, see docs/methods.md#methods),
then the generic fallbacks below; a value the user sets always wins. Several ``TrainingArguments`` defaults
are changed for this use (constant learning rate, no gradient clipping, no checkpoints, log every step,
batch 128, at most 100 passes over the probe set). ``report_to`` already defaults to "none".
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, fields

import torch
from transformers import TrainingArguments

from ..lora import PEFT_TYPES
from ..methods import DEFAULT_PRESET, METHOD_REGISTRY, get_method
from ..methods.base import check_choices, check_option
from ..methods.structguard import (
    ALIGNMENT_SCALINGS,
    ANCHOR_TYPES,
    DELETION_PATHS,
    IMPORTANCE_NORMALIZATIONS,
    IMPORTANCE_SCHEDULES,
    PROJECTOR_INITS,
)
from ..structure import ALIGNMENT_AXES, ALIGNMENT_MEASURES, IMPORTANCE_MODES
from .callbacks import forget_accuracy_level

BATCHNORM_MODES = ("joint", "separate", "frozen", "keep_stats")
DELETION_LOSSES = ("ascent", "nearest_wrong")

_PRESETS_HELP = "; ".join(
    f"{name}: {', '.join(repr(preset) for preset in cls.presets)}" for name, cls in METHOD_REGISTRY.items() if cls.presets
)

#: Values for fields that are still ``None`` after the method's defaults (and preset) were applied.
FALLBACK_DEFAULTS = {
    "learning_rate": 1e-3,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "probe_epsilon": 4.0,
    "probes_per_image": 20,
    "probe_min_hit_rate": 0.0,
    "batchnorm": "joint",
    "stop_check_from_epoch": 0,
    "deletion_loss": "ascent",
    "regularization_weight": 1.0,
    "importance_normalization": "none",
    "deletion_weight_growth": 0.0,
    "per_sample_stopping": False,
    "deletion_margin": 0.0,
    "alignment_scaling": "constant",
    "alignment_weight": 1.0,
}


@dataclass
class UnlearningConfig(TrainingArguments):
    """Arguments of :class:`~hf_structguard.trainer.UnlearningTrainer` (parse with ``HfArgumentParser``)."""

    # --- method ---
    method: str = field(
        default="structguard",
        metadata={"help": f"Unlearning method, a name in the method registry ({', '.join(sorted(METHOD_REGISTRY))})."},
    )

    # --- TrainingArguments whose defaults change for unlearning ---
    output_dir: str | None = field(
        default="unlearning_output",
        metadata={"help": "Folder for checkpoints (only written when save_strategy != 'no'). scripts/run.py: the run folder (checkpoints go to <output_dir>/checkpoints/<method>, removed when the run completes)."},
    )
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "SGD learning rate of the model. Default: the method's (structguard 0.005, baselines 1e-3)."},
    )
    weight_decay: float | None = field(
        default=None, metadata={"help": "SGD weight decay. Default: the method's (structguard 0, baselines 1e-4)."}
    )
    per_device_train_batch_size: int = field(
        default=128, metadata={"help": "Probe minibatch size per process (the paper's: 128)."}
    )
    num_train_epochs: float = field(
        default=100,
        metadata={"help": "Cap on the number of passes over the probe set; training usually stops earlier at A_f = 0."},
    )
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Learning-rate schedule; the reference uses a constant rate."}
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 = none (reference)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log every N steps (1: the per-step curves of Figure 2)."}
    )
    save_strategy: str = field(
        default="no",
        metadata={"help": "Checkpoint strategy ('no', 'steps', 'epoch'); with 'steps' the step that stops training is "
                  "checkpointed too, and --resume_from_checkpoint (a checkpoint-N folder, or true for the latest) "
                  "continues an interrupted run exactly. scripts/run.py and scripts/sequential.py default to 'steps'."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume an interrupted run: 'true' for the latest checkpoint (scripts/run.py: of each method, "
                  "under <output_dir>/checkpoints) or a checkpoint-N folder. Restores the weights, optimiser, step, RNG, "
                  "the method's importance and the stopping state; the run ends as an uninterrupted one would."},
    )
    save_total_limit: int | None = field(
        default=1,
        metadata={"help": "Checkpoints kept per run (older ones are deleted); each holds the model and the optimiser "
                  "state. None = keep all."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: probe batches carry a 'probe_index' column."}
    )
    use_cpu: bool | None = field(default=None, metadata={"help": "Run on the CPU. Default: True when CUDA is absent."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (False: every parameter gets a gradient)."}
    )

    # --- optimiser (all methods) ---
    momentum: float | None = field(
        default=None, metadata={"help": "SGD momentum. Default: the method's (structguard 0, baselines 0.9)."}
    )
    projector_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the projector group (structguard: 0.009 on CIFAR-10). Default: learning_rate."
        },
    )
    forget_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Forget minibatch size per process (the forget set cycles). Default: per_device_train_batch_size."
        },
    )

    # --- probes (read by the pipeline that generates them) ---
    probe_epsilon: float | None = field(
        default=None,
        metadata={
            "help": "L2 radius ε of the targeted PGD probes. Default: the method's (structguard 3.0, baselines 4.0)."
        },
    )
    probes_per_image: int | None = field(
        default=None, metadata={"help": "N_adv, probes generated per forget image. Default: the method's (20)."}
    )
    probe_step_size: float | None = field(
        default=None,
        metadata={
            "help": "PGD step size of the probes. Default: 2.5·ε/probe_num_steps (0.1 at the paper's ε 4, 100 "
            "iterations); structguard's reference preset: 0.1."
        },
    )
    probe_num_steps: int = field(default=100, metadata={"help": "PGD iterations of the probes."})
    probe_min_hit_rate: float | None = field(
        default=None,
        metadata={
            "help": "Shrinking probe radius (docs/concepts.md#probe-radius): when > 0, probe_epsilon is the largest "
            "radius, halved (at most 3 times) while the targeted PGD probes of the Before model still reach their "
            "target class for at least this percentage of probes; the smallest such radius is used. 0 keeps "
            "probe_epsilon. Default: the method's (structguard default preset 90, reference preset and baselines 0)."
        },
    )

    # --- BatchNorm during unlearning steps (all methods) ---
    batchnorm: str | None = field(
        default=None,
        metadata={
            "help": "How forget and probe minibatches meet BatchNorm in a step: 'joint' (one train-mode forward of "
            "the concatenation), 'separate' (two train-mode forwards, the reference's), 'frozen' (eval-mode "
            "BatchNorm: the Before model's running statistics normalise, affine weights still train), 'keep_stats' "
            "(one train-mode forward; the running statistics are put back to the Before model's after every "
            "step, so the deployed model keeps them). Default: the "
            "method's (baselines 'separate', structguard per preset).",
            "choices": list(BATCHNORM_MODES),
        },
    )

    # --- StructGuard ---
    preset: str = field(
        default=DEFAULT_PRESET,
        metadata={
            "help": "A named set of the method's defaults (ignored by methods without presets; "
            f"{_PRESETS_HELP}). structguard 'default': residual identity projector, deletion through the deployed "
            "path, frozen BatchNorm statistics; 'reference': the authors' code path (fresh projector, deletion "
            "bypassing it, separate train-mode forwards, per-pass importance schedule, PGD step 0.1). Fields you set "
            "yourself win over the preset."
        },
    )
    structguard_preset: str | None = field(
        default=None, metadata={"help": "Deprecated: use --preset (the same values)."}
    )
    projector_init: str | None = field(
        default=None,
        metadata={
            "help": "structguard projector: 'fresh' (the reference's MLP, default init: the deployed model starts "
            "near chance), 'residual' (z + MLP(z) with a zero last layer: starts as the Before model), 'none' "
            "(no projector; structure read from the backbone features). Default: the preset's.",
            "choices": list(PROJECTOR_INITS),
        },
    )
    deletion_path: str | None = field(
        default=None,
        metadata={
            "help": "structguard: 'backbone' (the reference: deletion on h(g(x)), retention on h(p(g(x)))) or "
            "'deployed' (deletion and retention on the path the model predicts with). Default: the preset's.",
            "choices": list(DELETION_PATHS),
        },
    )
    importance_schedule: str | None = field(
        default=None,
        metadata={
            "help": "structguard: 'once' (importance at step importance_step, penalty from then on) or "
            "'reference' (importance at the second step of a pass, penalty only from the third step of each "
            "pass, BatchNorm statistics of the importance pass kept). Default: the preset's.",
            "choices": list(IMPORTANCE_SCHEDULES),
        },
    )
    projector_eval_after_first_check: bool | None = field(
        default=None,
        metadata={
            "help": "structguard: the projector's BatchNorm uses its running statistics after the first "
            "forget-accuracy check (the reference's behaviour). Default: the preset's."
        },
    )
    anchor_type: str = field(
        default="semantic",
        metadata={
            "help": "structguard anchors: 'semantic' (the AnchorSet) or 'visual' (class means of the original model's "
            "probe embeddings, mapped to anchor space; paper Table 4).",
            "choices": list(ANCHOR_TYPES),
        },
    )
    alignment_measure: str = field(
        default="cosine",
        metadata={"help": "structguard alignment measure (paper Table 6).", "choices": list(ALIGNMENT_MEASURES)},
    )
    alignment_axis: str = field(
        default="row",
        metadata={
            "help": "'row': cosine per probe over the anchors (reference); 'column': per anchor over the probes "
            "(the paper's Eq. 2).",
            "choices": list(ALIGNMENT_AXES),
        },
    )
    alignment_temperature: float = field(
        default=0.1, metadata={"help": "Softmax temperature τ of the 'kl' alignment measure (affinities are cosines)."}
    )
    mmd_bandwidth: float | None = field(
        default=None,
        metadata={"help": "RBF bandwidth σ of the 'mmd' alignment measure; None = median pairwise distance per batch."},
    )
    alignment_weight: float | None = field(
        default=None,
        metadata={"help": "Weight w_a of L_align in the structguard total. Default: the preset's (30 in default, "
                  "scaled by alignment_scaling; 1 in reference, the paper's)."},
    )
    alignment_scaling: str | None = field(
        default=None,
        metadata={
            "help": "How structguard's alignment weight follows the request: 'constant' (alignment_weight, the "
            "paper's) or 'forget_ratio' (alignment_weight·n_f/n_a, with n_f forget samples and n_a probes in the "
            "step's minibatch: the structure is defended in proportion to the deletion's share, which grows with "
            "k). Default: the preset's.",
            "choices": list(ALIGNMENT_SCALINGS),
        },
    )
    regularization_weight: float | None = field(
        default=None,
        metadata={
            "help": "λ, weight of L_reg in the structguard total. Default: 1 (the paper's) with raw importance; "
            "1/learning_rate with normalised importance (one SGD step then pulls the most important parameter fully "
            "back to its original value)."
        },
    )
    classifier_reg_weight: float = field(
        default=0.001, metadata={"help": "Weight of the classifier elastic net (CR) in the structguard total."}
    )
    classifier_l1_ratio: float = field(
        default=0.99, metadata={"help": "Elastic-net mix: ratio·‖W‖₁ + ½(1−ratio)·‖W‖²_F (reference: 0.99)."}
    )
    use_alignment: bool = field(default=True, metadata={"help": "structguard: use structure-aware alignment (SA)."})
    use_regularization: bool = field(
        default=True, metadata={"help": "structguard: use structure-aware regularisation (SR)."}
    )
    use_classifier_reg: bool = field(
        default=True, metadata={"help": "structguard: use the classifier elastic net (CR)."}
    )
    importance_mode: str = field(
        default="batch",
        metadata={
            "help": "structguard importance: 'batch' (reference: |grad| of batch-mean L_align, batch-size weighted) "
            "or 'per_sample' (the paper's Eq. 4 exactly).",
            "choices": list(IMPORTANCE_MODES),
        },
    )
    importance_num_samples: int | None = field(
        default=None,
        metadata={
            "help": "structguard 'batch' importance: probes seen (cycling the probe set). The reference uses ≈|D_r|. "
            "Default: the train split's size minus k when scripts/run.py knows it, else 50000 (CIFAR's |D_r|)."
        },
    )
    importance_normalization: str | None = field(
        default=None,
        metadata={
            "help": "structguard importance scale: 'none' (the paper's raw mean |gradient|), 'max' (divided by its "
            "largest entry) or 'tensor_max' (by each tensor's largest entry); scaled, I lies in [0, 1] and "
            "λ·learning_rate <= 1 keeps the penalty's step from overshooting. "
            "Default: the preset's ('max' in default, 'none' in reference).",
            "choices": list(IMPORTANCE_NORMALIZATIONS),
        },
    )
    deletion_weight_growth: float | None = field(
        default=None,
        metadata={
            "help": "structguard: per-step growth g of each forget sample's deletion weight while the model still "
            "recognises it (w <- w·(1+g), a dual-ascent multiplier on the constraint 'misclassified'), so a few "
            "stubborn samples get pushed harder while forgotten ones keep their weight. 0 = fixed weights (the "
            "paper's). Default: the preset's (0.02 in default, 0 in reference).",
        },
    )
    per_sample_stopping: bool | None = field(
        default=None,
        metadata={
            "help": "structguard: push each forget sample only while the model still recognises it; one it already "
            "misclassifies gets no deletion term in that step (docs/concepts.md#per-sample-stopping), so forgetting "
            "does not go on deepening after the boundary is crossed. Default: the preset's.",
        },
    )
    deletion_margin: float | None = field(
        default=None,
        metadata={
            "help": "structguard with per_sample_stopping: keep pushing a forget sample until its highest wrong logit "
            "exceeds its true-class logit by this margin, so a sample released just past the boundary does not "
            "drift back while retention pulls the model towards the Before model. 0 = released at the boundary. "
            "Default: the preset's (0).",
        },
    )
    deletion_loss: str | None = field(
        default=None,
        metadata={
            "help": "Deletion term of structguard, adv and l2ul: 'ascent' (−CE of the true label, the paper's; "
            "unbounded) or 'nearest_wrong' (+CE towards the highest-scoring wrong class: each forget sample crosses "
            "its nearest boundary and is not pushed further). Default: 'ascent', structguard's default preset "
            "'nearest_wrong'.",
            "choices": list(DELETION_LOSSES),
        },
    )
    importance_step: int = field(
        default=1, metadata={"help": "structguard: optimisation step (0-based) at which importance is computed."}
    )
    projector_seed: int | None = field(
        default=None, metadata={"help": "Seed of the projector's initialisation. Default: seed."}
    )
    deploy_through_projector: bool = field(
        default=True,
        metadata={
            "help": "structguard: the unlearned model predicts with h(p(g(x))) (the reference; the projector ships "
            "with the model) or, when False, with h(g(x)) (docs/concepts.md#projector). Also the path the stopping rule checks."
        },
    )

    # --- parameter-efficient unlearning (hf_structguard.lora) ---
    peft: str | None = field(
        default=None,
        metadata={
            "help": "Train a parameter-efficient adapter instead of all weights: 'lora' (peft). The classifier, the "
            "projector and every BatchNorm layer (weights and running statistics) are trained and saved in full; "
            "the base model is left unchanged. Not for fisher (a one-shot full-rank scrub, no training)."
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r (with --peft lora)."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA alpha (the update is scaled by alpha/r). Default: lora_rank."}
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Backbone Conv2d/Linear layers that get LoRA factors, by name, dotted tail (conv1) or head "
            "(layer4). Default: all of them."
        },
    )

    # --- stopping and logging ---
    stop_at_zero_forget_accuracy: bool = field(
        default=True, metadata={"help": "Stop as soon as the forget accuracy is exactly 0 percent."}
    )
    forget_accuracy_target: str = field(
        default="zero",
        metadata={
            "help": "Forget accuracy at which unlearning stops: 'zero' (exactly 0 percent, the paper's rule), "
            "'retrained' (the level a model retrained without the forget images would show, estimated without "
            "retain data as the Before model's accuracy on the held-out test split, i.e. on images it never saw; "
            "scripts/run.py and scripts/verify.py fill it in), or a percentage (stop at or below it)."
        },
    )
    stop_check_from_epoch: int | None = field(
        default=None,
        metadata={
            "help": "First pass over the probe set (0-based) whose steps may stop training. Default: the method's "
            "(baselines 0, structguard's reference preset 1)."
        },
    )
    drift_num_probes: int = field(
        default=512, metadata={"help": "Probes (a fixed seeded subset) on which structural drift is logged; 0 = off."}
    )
    drift_every_steps: int = field(default=1, metadata={"help": "Log structural drift every N steps."})
    log_print_steps: int = field(
        default=25,
        metadata={"help": "Print the loss terms to the terminal every N steps (every step is still logged)."},
    )

    def __post_init__(self):
        if self.structguard_preset is not None:
            warnings.warn("structguard_preset is deprecated and will be removed; use preset", FutureWarning, stacklevel=3)
            self.preset, self.structguard_preset = self.structguard_preset, None
        method_cls = get_method(self.method)
        known = {f.name for f in fields(self)}
        if method_cls.presets and self.preset not in method_cls.presets:
            raise ValueError(f"unknown preset {self.preset!r} for {self.method}; choose one of {sorted(method_cls.presets)}")
        defaults = {**method_cls.defaults, **method_cls.presets.get(self.preset, {})}
        unset = [
            name for name in (*defaults, *FALLBACK_DEFAULTS, "projector_learning_rate") if getattr(self, name) is None
        ]
        for name, value in defaults.items():
            if name not in known:
                raise ValueError(f"method {self.method!r} has a default for unknown config field {name!r}")
            if getattr(self, name) is None:
                setattr(self, name, value)
        normalised = self.importance_normalization not in (None, "none")
        if self.regularization_weight is None and normalised and self.learning_rate > 0:
            self.regularization_weight = 1.0 / self.learning_rate  # the most important ψ_j is pulled fully back
        for name, value in FALLBACK_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.projector_learning_rate is None:
            self.projector_learning_rate = self.learning_rate
        if self.use_cpu is None:
            self.use_cpu = not torch.cuda.is_available()
        self.defaulted_fields = frozenset(unset)  # fields that took a default (re-defaulted by for_method)
        self._validate()
        super().__post_init__()

    def for_method(self, method: str, **changes) -> UnlearningConfig:
        """A copy for ``method``: fields that took the current method's defaults take the new method's, fields
        the user set are kept; ``changes`` are further field values (e.g. ``output_dir``)."""
        unset = {name: None for name in self.defaulted_fields if name not in changes}
        return dataclasses.replace(self, method=method, **unset, **changes)

    def _validate(self) -> None:
        """The generic checks (optimiser, probes, batching, stopping, LoRA), then the method's own
        (:meth:`~hf_structguard.methods.UnlearningMethod.check_config`)."""
        self._check_optimiser_and_probes()
        self._check_batching_and_logging()
        self._check_peft()
        get_method(self.method).check_config(self)

    def _check_optimiser_and_probes(self) -> None:
        check_option(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check_option(
            self.projector_learning_rate > 0, f"projector_learning_rate must be > 0, got {self.projector_learning_rate}"
        )
        check_option(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check_option(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check_option(self.probe_epsilon > 0, f"probe_epsilon must be > 0, got {self.probe_epsilon}")
        check_option(self.probes_per_image >= 1, f"probes_per_image must be >= 1, got {self.probes_per_image}")
        check_option(
            self.probe_step_size is None or self.probe_step_size > 0,
            f"probe_step_size must be > 0 (or None for 2.5·ε/iterations), got {self.probe_step_size}",
        )
        check_option(self.probe_num_steps >= 1, f"probe_num_steps must be >= 1, got {self.probe_num_steps}")
        check_option(
            0 <= self.probe_min_hit_rate <= 100, f"probe_min_hit_rate must be in [0, 100] (%), got {self.probe_min_hit_rate}"
        )
        check_choices(self, {"batchnorm": BATCHNORM_MODES, "deletion_loss": DELETION_LOSSES})

    def _check_batching_and_logging(self) -> None:
        check_option(self.per_device_train_batch_size >= 1, "per_device_train_batch_size must be >= 1")
        check_option(
            self.forget_batch_size is None or self.forget_batch_size >= 1,
            f"forget_batch_size must be >= 1 (or None), got {self.forget_batch_size}",
        )
        check_option(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs (the pass cap) must be > 0")
        check_option(
            self.gradient_accumulation_steps == 1,
            "gradient_accumulation_steps must be 1: each step pairs one probe and one forget minibatch",
        )
        check_option(
            self.stop_check_from_epoch >= 0, f"stop_check_from_epoch must be >= 0, got {self.stop_check_from_epoch}"
        )
        forget_accuracy_level(self.forget_accuracy_target)  # ValueError unless zero, retrained or a percentage
        check_option(self.drift_num_probes >= 0, f"drift_num_probes must be >= 0, got {self.drift_num_probes}")
        check_option(self.log_print_steps >= 1, f"log_print_steps must be >= 1, got {self.log_print_steps}")
        check_option(self.drift_every_steps >= 1, f"drift_every_steps must be >= 1, got {self.drift_every_steps}")

    def _check_peft(self) -> None:
        check_option(
            not (self.peft and self.batchnorm == "keep_stats"),
            "batchnorm='keep_stats' restores the Before statistics by parameter name, which a LoRA wrapper changes; "
            "use batchnorm='frozen' with --peft",
        )
        check_option(
            self.peft in (None, *PEFT_TYPES), f"unknown peft type {self.peft!r}; supported: {', '.join(PEFT_TYPES)}"
        )
        check_option(self.lora_rank >= 1, f"lora_rank must be >= 1, got {self.lora_rank}")
        check_option(self.lora_alpha is None or self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")
