"""StructGuard (Hong, Shin, Kim, CVPR 2026; docs/concepts.md#anchors to #importance): structure-faithful instance unlearning.

Per step, with a probe minibatch ``x_s`` (target labels ``y_s``) and a forget minibatch ``x_f``:

- ``deletion  = −n_f/(n_f+n_a)·CE(logits(x_f), y_f)`` (``deletion_loss="ascent"``; ``"nearest_wrong"``:
  ``+n_f/(n_f+n_a)·CE(logits(x_f), ŷ_f)`` with ``ŷ_f`` the highest-scoring wrong class), each sample's term
  times its weight ``w_f`` (1 unless ``deletion_weight_growth`` > 0);
- ``retention =  n_a/(n_f+n_a)·CE(h(p(g(x_s))), y_s)``;
- ``alignment = L_align(S_ori[x_s], S_unl[x_s])`` (:func:`~hf_structguard.structure.alignment_loss`);
- ``regularization = ½ Σ_j I_j (ψ_j − ψ_j^ori)²`` over the feature extractor ψ, zero until the importance
  ``I`` is computed (``importance_schedule``);
- ``classifier_reg = 0.99‖W‖₁ + ½·0.01‖W‖²_F`` on the classifier weight.

``loss = deletion + retention + w_a·alignment + λ·regularization + w_c·classifier_reg`` (1, 1, 0.001 in the
paper; λ = 1/learning_rate with scaled importance; ``alignment_scaling="forget_ratio"`` multiplies w_a by the
minibatch's n_f/n_a); SA, SR and CR can be switched off (``use_alignment``,
``use_regularization``, ``use_classifier_reg``). Plain SGD with two parameter groups (model lr, projector lr).

Two presets (:attr:`StructGuard.presets`, picked with ``preset``):

- ``reference`` — the authors' code path (docs/methods.md#presets): a freshly initialised projector that the model
  predicts through (so it starts near chance), deletion on ``h(g(x_f))`` bypassing it, two train-mode forwards
  per step, importance at the second step of a pass with the penalty only from the third step of each pass,
  the projector's BatchNorm frozen after the first forget-accuracy check, PGD step 0.1, stop from pass 1.
- ``default`` — a residual projector ``z + MLP(z)`` whose last layer starts at zero (the deployed model is
  the Before model until the first update, and ``S_unl = S_ori``), deletion and retention on the deployed
  path ``h(p(g(x)))``, a bounded deletion term (``+CE`` towards each forget sample's highest-scoring wrong
  class instead of the unbounded ``−CE``), BatchNorm running statistics frozen at the Before model's,
  importance once at step 1 scaled into [0, 1] with λ = 1/learning_rate (``importance_normalization="max"``),
  per-sample deletion weights that grow 2 % per step while the sample is still recognised
  (``deletion_weight_growth``) and no deletion term for a sample already misclassified
  (``per_sample_stopping``), an alignment weight that follows the request (30·n_f/n_a: the structure is
  defended in proportion to the deletion's share of the minibatch, which grows with k), PGD step
  2.5·ε/iterations, stop from the first step. Chosen on retained
  training data (A_r) over forget seeds (README, "Choosing the default").
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..lora import effective_parameters, is_peft_model, plain_copy
from ..modeling import anchor_space_map
from ..structure import (
    ALIGNMENT_AXES,
    ALIGNMENT_MEASURES,
    IMPORTANCE_MODES,
    AnchorSpace,
    alignment_loss,
    elastic_net,
    importance_penalty,
    normalized_importance,
    structure,
    structure_importance,
)
from .adv import weighted_deletion_retention
from .base import UnlearningMethod, check_choices, check_option, register_method

logger = logging.getLogger(__name__)


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``g(x)`` of ``model`` in eval mode, computed in batches on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.features(chunk.to(device)) for chunk in images.split(batch_size)])
    finally:
        model.train(was_training)


def visual_prototypes(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, anchor_dim: int, feature_map_seed: int = 0
) -> torch.Tensor:
    """Visual anchors (paper Table 4): per-class means of ``features``, mapped to anchor space, L2-normalised.

    Classes without any sample are left out (the structure then has fewer columns).
    """
    present = [c for c in range(num_classes) if bool((labels == c).any())]
    if not present:
        raise ValueError("visual prototypes need at least one labelled probe")
    missing = sorted(set(range(num_classes)) - set(present))
    if missing:
        logger.warning("visual prototypes: no probe targets class(es) %s; those anchors are left out", missing)
    means = torch.stack([features[labels == c].mean(0) for c in present])
    d = features.shape[1]
    if d != anchor_dim:
        means = means @ anchor_space_map(d, anchor_dim, feature_map_seed).to(means.device)
    return F.normalize(means, dim=1)


#: The reference's importance budget on CIFAR (≈|D_r|), used when the retained-set size is not known.
REFERENCE_IMPORTANCE_SAMPLES = 50_000

# Allowed values of StructGuard's options (``UnlearningConfig`` fields).
ANCHOR_TYPES = ("semantic", "visual")
PROJECTOR_INITS = ("fresh", "residual", "none")
DELETION_PATHS = ("backbone", "deployed")
IMPORTANCE_SCHEDULES = ("once", "reference")
IMPORTANCE_NORMALIZATIONS = ("none", "max", "tensor_max")
ALIGNMENT_SCALINGS = ("constant", "forget_ratio")


@register_method("structguard")
class StructGuard(UnlearningMethod):
    """StructGuard losses (module docstring). Needs anchors unless ``anchor_type="visual"``."""

    description = (
        "StructGuard (Hong, Shin & Kim, *Stake the Points: Structure-Faithful Instance Unlearning*, CVPR 2026): "
        "the forget samples are pushed to misclassification (negative cross-entropy) while targeted-PGD probes "
        "around them stand in for the retain set (cross-entropy through a learnable projector). Semantic anchors "
        "(text embeddings of class attribute descriptions) act as stakes: the probes' affinities to the anchors "
        "are kept aligned with those of the original model (structure-aware alignment), and parameters that "
        "matter for that structure are held close to their original values (structure-aware regularisation, "
        "plus an elastic-net penalty on the classifier). The projector is part of the published model."
    )
    defaults: ClassVar[dict] = {
        "learning_rate": 0.005,
        "projector_learning_rate": 0.009,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "probe_epsilon": 3.0,
        "probes_per_image": 20,
    }
    presets: ClassVar[dict[str, dict]] = {
        "reference": {
            "projector_init": "fresh",
            "deletion_path": "backbone",
            "batchnorm": "separate",
            "importance_schedule": "reference",
            "projector_eval_after_first_check": True,
            "deletion_loss": "ascent",
            "stop_check_from_epoch": 1,
            "probe_step_size": 0.1,
            "importance_normalization": "none",
            "deletion_weight_growth": 0.0,
            "alignment_scaling": "constant",
            "alignment_weight": 1.0,
            "probe_min_hit_rate": 0.0,
        },
        "default": {
            "projector_init": "residual",
            "deletion_path": "deployed",
            "batchnorm": "frozen",
            "importance_schedule": "once",
            "projector_eval_after_first_check": False,
            "deletion_loss": "nearest_wrong",
            "stop_check_from_epoch": 0,
            "importance_normalization": "max",
            "deletion_weight_growth": 0.02,
            "per_sample_stopping": True,
            "alignment_scaling": "forget_ratio",
            "alignment_weight": 30.0,
            "probe_min_hit_rate": 90.0,
        },
    }

    @classmethod
    def check_config(cls, config) -> None:
        """StructGuard's options: allowed names, positive scales and weights, a penalty step that cannot overshoot."""
        check_choices(config, {
            "anchor_type": ANCHOR_TYPES, "projector_init": PROJECTOR_INITS, "deletion_path": DELETION_PATHS,
            "importance_schedule": IMPORTANCE_SCHEDULES, "importance_normalization": IMPORTANCE_NORMALIZATIONS,
            "alignment_scaling": ALIGNMENT_SCALINGS, "alignment_measure": ALIGNMENT_MEASURES,
            "alignment_axis": ALIGNMENT_AXES, "importance_mode": IMPORTANCE_MODES,
        })
        check_option(not (config.importance_mode == "per_sample" and config.alignment_axis == "column"),
               "importance_mode='per_sample' needs alignment_axis='row' (a column over one probe has no spread)")
        check_option(config.alignment_temperature > 0, f"alignment_temperature must be > 0, got {config.alignment_temperature}")
        check_option(config.mmd_bandwidth is None or config.mmd_bandwidth > 0,
               f"mmd_bandwidth must be > 0 (or None for the median heuristic), got {config.mmd_bandwidth}")
        penalty_step = config.regularization_weight * config.learning_rate
        check_option(config.importance_normalization == "none" or penalty_step <= 2,
               f"regularization_weight·learning_rate = {penalty_step:g} > 2: with normalised importance the "
               "penalty's SGD step overshoots and diverges; lower regularization_weight (1/learning_rate is the default)")
        check_option(config.deletion_margin == 0 or config.per_sample_stopping,
               f"deletion_margin = {config.deletion_margin:g} only acts with per_sample_stopping; turn that on or set 0")
        for name in ("alignment_weight", "regularization_weight", "classifier_reg_weight", "deletion_weight_growth",
                     "deletion_margin"):
            check_option(getattr(config, name) >= 0, f"{name} must be >= 0, got {getattr(config, name)}")
        check_option(0 <= config.classifier_l1_ratio <= 1,
               f"classifier_l1_ratio must be in [0, 1], got {config.classifier_l1_ratio}")
        check_option(config.importance_num_samples is None or config.importance_num_samples >= 1,
               f"importance_num_samples must be >= 1, got {config.importance_num_samples}")
        check_option(config.importance_step >= 0, f"importance_step must be >= 0, got {config.importance_step}")

    def __init__(self, args, original_model, anchors=None, retain_dataset=None):
        super().__init__(args, original_model, anchors, retain_dataset)
        if args.anchor_type == "semantic" and anchors is None:
            raise ValueError("structguard with anchor_type='semantic' needs anchors (an AnchorSet); pass anchors=...")
        self.space: AnchorSpace | None = None
        self.s_ori: torch.Tensor | None = None
        self.reference: dict[str, torch.Tensor] = {}
        self.importance: dict[str, torch.Tensor] | None = None
        self.deletion_weights: torch.Tensor | None = None  # one per forget sample (deletion_weight_growth)
        self.steps_per_pass = 1
        self.align = partial(
            alignment_loss,
            measure=args.alignment_measure,
            axis=args.alignment_axis,
            temperature=args.alignment_temperature,
            bandwidth=args.mmd_bandwidth,
        )

    def prepare(self, model):
        """Anchors, ``S_ori`` of every probe, ψ^ori, and a seeded projector when the model has none."""
        if self.probes is None:
            raise ValueError("structguard needs the probe set: set method.probes before prepare()")
        device = next(model.parameters()).device
        d = model.config.num_features
        seed = model.config.feature_map_seed
        features = pooled_features(self.original_model, self.probes.images)
        if self.args.anchor_type == "semantic":
            anchors = self.anchors.embeddings
        else:
            anchor_dim = d if self.anchors is None else self.anchors.dim
            anchors = visual_prototypes(
                features, self.probes.targets.to(device), model.config.num_labels, anchor_dim, seed
            )
        self.space = AnchorSpace(anchors, d, seed).to(device)
        self.s_ori = self.space.feature_structure(features)
        if model.projector is None and self.args.projector_init != "none":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.args.seed if self.args.projector_seed is None else self.args.projector_seed)
                model.add_projector(self.space.dim, residual=self.args.projector_init == "residual")
        elif model.projector is not None and model.config.anchor_dim != self.space.dim:
            raise ValueError(
                f"the model's projector was built for {model.config.anchor_dim}-dim anchors but the anchors are "
                f"{self.space.dim}-dim; start from a model without a projector"
            )
        model.config.classify_through_projector = self.args.deploy_through_projector
        original = dict(self.original_model.backbone_parameters())
        self.reference = {name: original[name].detach().clone() for name, _ in effective_parameters(model, "backbone")}
        per_process = math.ceil(len(self.probes) / self.args.world_size)
        self.steps_per_pass = math.ceil(per_process / self.args.per_device_train_batch_size)

    def pass_position(self, step: int) -> int:
        """0-based index of global ``step`` within its pass over the probe set."""
        return step % self.steps_per_pass

    def param_groups(self, model):
        if model.projector is None:
            return super().param_groups(model)
        projector = {id(p) for p in model.projector.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in projector]
        heads = [p for p in model.projector.parameters() if p.requires_grad]
        return [
            {"params": rest, "lr": self.args.learning_rate},
            {"params": heads, "lr": self.args.projector_learning_rate},
        ]

    def set_train_modes(self, model, step):
        """Frozen BatchNorm (``batchnorm="frozen"``); with ``projector_eval_after_first_check`` the projector
        stays in eval mode once the first forget-accuracy check has run (as in the reference)."""
        super().set_train_modes(model, step)
        first_check = self.args.stop_check_from_epoch * self.steps_per_pass
        if self.args.projector_eval_after_first_check and model.projector is not None and step > first_check:
            model.projector.eval()

    def importance_due(self, step: int) -> bool:
        if self.args.importance_schedule == "reference":
            return self.pass_position(step) == 1
        return step >= self.args.importance_step

    def penalty_active(self, step: int) -> bool:
        if self.importance is None:
            return False
        return self.args.importance_schedule != "reference" or self.pass_position(step) > 1

    def on_step_begin(self, model, step, trainer):
        if self.args.use_regularization and self.importance is None and self.importance_due(step):
            # ψ of a LoRA model are its merged weights: their importance is computed on a merged copy
            plain = plain_copy(model).requires_grad_(True) if is_peft_model(model) else model
            importance = structure_importance(
                plain,
                self.space,
                self.probes.images,
                self.s_ori,
                plain.backbone_parameters(),
                self.align,
                mode=self.args.importance_mode,
                num_samples=self.args.importance_num_samples or REFERENCE_IMPORTANCE_SAMPLES,
                batch_size=self.args.per_device_train_batch_size,
                seed=self.args.seed,
                batch_statistics=self.args.batchnorm != "frozen",
                restore_buffers=self.args.importance_schedule != "reference",
            )
            self.importance = normalized_importance(importance, self.args.importance_normalization)

    def heads(self, model, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(z), structure vectors)`` of backbone features ``z``; ``(z, M(z))`` without a projector."""
        if model.projector is None:
            return features, self.space.map_features(features)
        return self.space.projector_vectors(model.projector, features)

    def compute_loss(self, model, probe_batch, forget_batch, step):
        deployed = self.args.deletion_path == "deployed"

        def forward(images):
            features = model.features(images)
            return (features, *self.heads(model, features)) if deployed else features

        forget_out, probe_out = self.paired_forward(forward, forget_batch["pixel_values"], probe_batch["pixel_values"])
        if deployed:  # deletion and retention on the path the model predicts with
            (forget_features, forget_projected, _), (probe_features, projected, vectors) = forget_out, probe_out
            use_projector = model.projector is not None and model.config.classify_through_projector
            forget_logits = model.classifier(forget_projected if use_projector else forget_features)
            probe_logits = model.classifier(projected if use_projector else probe_features)
        else:  # the reference: deletion bypasses the projector, retention goes through it
            projected, vectors = self.heads(model, probe_out)
            forget_logits, probe_logits = model.classifier(forget_out), model.classifier(projected)
        weights = self.deletion_weights_for(forget_logits, forget_batch)
        deletion, retention = weighted_deletion_retention(
            forget_logits, forget_batch["labels"], probe_logits, probe_batch["labels"],
            deletion_loss=self.args.deletion_loss, sample_weights=weights,
        )
        terms = {"deletion": deletion, "retention": retention}
        loss = deletion + retention
        if self.args.use_alignment:
            s_unl = structure(vectors, self.space.anchors)
            terms["alignment"] = self.align(self.s_ori[probe_batch["probe_index"]], s_unl)
            weight = self.alignment_weight(len(forget_batch["labels"]), len(probe_batch["labels"]))
            loss = loss + weight * terms["alignment"]
        if self.args.use_regularization:
            terms["regularization"] = (
                importance_penalty(effective_parameters(model, "backbone"), self.reference, self.importance)
                if self.penalty_active(step)
                else loss.new_zeros(())
            )
            loss = loss + self.args.regularization_weight * terms["regularization"]
        if self.args.use_classifier_reg:
            terms["classifier_reg"] = elastic_net(model.classifier.weight, self.args.classifier_l1_ratio)
            loss = loss + self.args.classifier_reg_weight * terms["classifier_reg"]
        terms["loss"] = loss
        return terms

    def alignment_weight(self, num_forget: int, num_probes: int) -> float:
        """``alignment_weight``, times ``n_f/n_a`` of this minibatch with ``alignment_scaling="forget_ratio"``."""
        if self.args.alignment_scaling == "forget_ratio":
            return self.args.alignment_weight * num_forget / max(num_probes, 1)
        return self.args.alignment_weight

    def deletion_weights_for(self, forget_logits: torch.Tensor, forget_batch: dict) -> torch.Tensor | None:
        """This batch's deletion weights: the grown weights (``deletion_weight_growth``; then every sample the model
        still recognises grows its weight by ``1 + deletion_weight_growth``), zero for samples already
        misclassified by at least ``deletion_margin`` with ``per_sample_stopping``. None when every weight is 1."""
        if not (self.args.deletion_weight_growth or self.args.per_sample_stopping):
            return None
        recognised = forget_logits.detach().argmax(dim=1) == forget_batch["labels"]
        weights = None
        if self.args.deletion_weight_growth:
            if self.deletion_weights is None:
                self.deletion_weights = torch.ones(len(self.forget_images), device=forget_logits.device)
            index = forget_batch["index"].to(forget_logits.device)
            weights = self.deletion_weights[index]
            grow = torch.zeros_like(self.deletion_weights)
            grow[index[recognised]] = 1.0
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(grow, op=dist.ReduceOp.MAX)  # every process sees every process's rows
            self.deletion_weights *= 1 + self.args.deletion_weight_growth * grow
        if self.args.per_sample_stopping:
            pushed = recognised
            if self.args.deletion_margin:
                logits, labels = forget_logits.detach(), forget_batch["labels"].view(-1, 1)
                past_boundary = logits.scatter(1, labels, float("-inf")).amax(dim=1) - logits.gather(1, labels).squeeze(1)
                pushed = recognised | (past_boundary < self.args.deletion_margin)
            weights = pushed.float() if weights is None else weights * pushed
        return weights

    def anchor_matrix(self):
        return super().anchor_matrix() if self.space is None else self.space.anchors

    def state_dict(self):
        state = {}
        if self.importance is not None:
            state.update({f"importance.{name}": value.detach().contiguous() for name, value in self.importance.items()})
        if self.deletion_weights is not None:
            state["deletion_weights"] = self.deletion_weights.detach().contiguous()
        return state

    def load_state_dict(self, state):
        state = dict(state)
        weights = state.pop("deletion_weights", None)
        if weights is not None:
            self.deletion_weights = weights.to(next(iter(self.reference.values())).device)
        if not state:
            return
        importance = {key.removeprefix("importance."): value for key, value in state.items()}
        expected = set(self.reference)
        if set(importance) != expected:
            raise ValueError(
                "the checkpoint's structguard importance does not match the model's feature extractor "
                f"(missing {sorted(expected - set(importance))[:3]}, unexpected {sorted(set(importance) - expected)[:3]})"
            )
        device = next(iter(self.reference.values())).device
        self.importance = {name: value.to(device) for name, value in importance.items()}
