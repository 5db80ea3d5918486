"""UnlearningConfig defaults and validation, paired batching, the stopping rule, the trainer (resume: test_resume.py)."""

import copy
import dataclasses
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from _unlearning_helpers import tiny_model, tiny_problem
from transformers import HfArgumentParser, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_structguard.errors import UnlearningDiverged, UserInputError
from hf_structguard.methods import METHOD_REGISTRY, UnlearningMethod, register_method
from hf_structguard.trainer import (
    ForgetAccuracyStopping,
    UnlearningConfig,
    UnlearningTrainer,
    cyclic_batch,
    cyclic_indices,
    run_unlearning,
)


# ---- config ----
def test_method_defaults_fill_unset_fields(tmp_path):
    sg = UnlearningConfig(output_dir=str(tmp_path))
    assert (sg.method, sg.learning_rate, sg.projector_learning_rate) == ("structguard", 0.005, 0.009)
    assert (sg.momentum, sg.weight_decay, sg.probe_epsilon, sg.probes_per_image) == (0.0, 0.0, 3.0, 20)
    for name in ("neggrad", "adv", "l2ul"):
        base = UnlearningConfig(output_dir=str(tmp_path), method=name)
        assert (base.learning_rate, base.momentum, base.weight_decay, base.probe_epsilon) == (1e-3, 0.9, 1e-4, 4.0)
        assert base.projector_learning_rate == base.learning_rate
    user = UnlearningConfig(output_dir=str(tmp_path), method="neggrad", learning_rate=0.1, momentum=0.0)
    assert (user.learning_rate, user.momentum, user.weight_decay) == (0.1, 0.0, 1e-4)


def test_for_method_swaps_defaults_but_keeps_user_values(tmp_path):
    config = UnlearningConfig(output_dir=str(tmp_path), weight_decay=0.5, per_device_train_batch_size=64)
    neggrad = config.for_method("neggrad", output_dir=str(tmp_path / "neggrad"))
    assert (neggrad.method, neggrad.learning_rate, neggrad.momentum, neggrad.projector_learning_rate) == (
        "neggrad", 1e-3, 0.9, 1e-3,
    )  # fmt: skip
    assert neggrad.weight_decay == 0.5 and neggrad.per_device_train_batch_size == 64
    assert neggrad.output_dir == str(tmp_path / "neggrad") and config.method == "structguard"
    back = neggrad.for_method("structguard")
    assert (back.learning_rate, back.projector_learning_rate, back.momentum, back.probe_epsilon) == (
        0.005, 0.009, 0.0, 3.0,
    )  # fmt: skip


def test_trainer_defaults_for_unlearning(tmp_path):
    args = UnlearningConfig(output_dir=str(tmp_path))
    assert args.per_device_train_batch_size == 128 and args.num_train_epochs == 100
    assert args.save_strategy == "no" and args.logging_steps == 1 and args.report_to == []
    assert args.remove_unused_columns is False and args.ddp_find_unused_parameters is False
    assert args.lr_scheduler_type == "constant" and args.max_grad_norm == 0.0
    assert args.use_cpu == (not torch.cuda.is_available())
    assert args.importance_num_samples is None and args.importance_step == 1  # None: ≈|D_r| (settle_config)


def test_every_new_field_has_help_and_parses_from_the_command_line(tmp_path):
    base = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for f in dataclasses.fields(UnlearningConfig):
        if f.name not in base or f.default is not base[f.name].default:
            assert f.metadata.get("help"), f"{f.name} has no help text"
    (args,) = HfArgumentParser(UnlearningConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--method", "l2ul", "--alignment_measure", "kl", "--no_use_alignment"]
    )
    assert args.method == "l2ul" and args.learning_rate == 1e-3 and args.alignment_measure == "kl"
    assert args.use_alignment is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "retrain"}, "choose one of: .*structguard"),
        ({"learning_rate": -0.1}, "learning_rate must be > 0"),
        ({"projector_learning_rate": 0.0}, "projector_learning_rate"),
        ({"momentum": 1.5}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"probe_epsilon": 0.0}, "probe_epsilon"),
        ({"alignment_measure": "l1"}, "alignment_measure must be one of"),
        ({"alignment_axis": "both"}, "alignment_axis"),
        ({"importance_mode": "per_sample", "alignment_axis": "column"}, "per_sample"),
        ({"anchor_type": "random"}, "anchor_type"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps"),
        ({"classifier_l1_ratio": 2.0}, "classifier_l1_ratio"),
        ({"forget_batch_size": 0}, "forget_batch_size"),
    ],
)
def test_bad_values_are_rejected_with_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        UnlearningConfig(output_dir=str(tmp_path), **overrides)


# ---- batching ----
def test_forget_batches_cycle_deterministically_by_step():
    assert torch.equal(cyclic_indices(10, 4, 3, seed=1), cyclic_indices(10, 4, 3, seed=1))
    stream = torch.cat([cyclic_indices(10, 5, position, seed=1) for position in range(4)])
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    whole = cyclic_indices(6, 128, 7)  # a batch larger than the set: the whole set
    assert sorted(whole.tolist()) == list(range(6))
    crossing = cyclic_indices(10, 4, 2, seed=0)  # positions 8..11 span two permutations
    assert len(crossing) == 4
    images, labels = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    ranks = [cyclic_batch(images, labels, 3, 5, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(ranks[0]["labels"], labels[cyclic_indices(10, 3, 10)])
    assert torch.equal(ranks[1]["labels"], labels[cyclic_indices(10, 3, 11)])


# ---- stopping rule ----
def test_stopping_callback_stops_exactly_at_zero_and_never_in_the_first_pass(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path))
    accuracies = iter([50.0, 0.0, 0.0, 25.0, 25.0, 0.0, 0.0])
    recorded = []
    callback = ForgetAccuracyStopping(lambda: next(accuracies), recorded.append)
    state, control = TrainerState(), TrainerControl()
    steps_per_pass = 3
    for step in range(1, 8):
        state.global_step, state.epoch = step, step / steps_per_pass
        callback.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    # zeros at steps 2 and 3 fall in the first pass (3 = its last step); the zero at step 6 stops
    assert callback.stopped_step == 6 and state.global_step == 6
    assert [r["forget_acc"] for r in recorded] == [50.0, 0.0, 0.0, 25.0, 25.0, 0.0]

    never = ForgetAccuracyStopping(lambda: 0.0, enabled=False)
    control = TrainerControl()
    state.epoch = 5.0
    never.on_step_end(args, state, control)
    assert not control.should_training_stop and never.last_accuracy == 0.0


# ---- trainer ----
@register_method("test_constant_ce")
class ConstantCE(UnlearningMethod):
    """A test-only method: CE on the probes through the deployed path; counts its hook calls."""

    description = "Cross-entropy on the probes (a test method)."
    defaults: ClassVar[dict] = {"learning_rate": 0.01, "momentum": 0.5, "weight_decay": 0.001}

    def prepare(self, model):
        self.steps_seen = []
        self.training_modes = []

    def compute_loss(self, model, probe_batch, forget_batch, step):
        self.training_modes.append(model.training)
        assert len(forget_batch["labels"]) == 3 and "probe_index" in probe_batch
        ce = F.cross_entropy(model(probe_batch["pixel_values"]).logits, probe_batch["labels"])
        return {"loss": ce, "probe_ce": ce}

    def on_step_begin(self, model, step, trainer):
        self.steps_seen.append(step)


@register_method("test_breaks_at_step_2")
class BreaksAtStep2(UnlearningMethod):
    """A test-only method: probe CE, and from step 2 on a NaN term (``break_kind="nan"``) or a finite loss
    whose gradient is not finite (``"gradient"``: d/dx sqrt(x) at 0)."""

    description = "Probe cross-entropy that stops being finite at step 2 (a test method)."
    break_kind = "nan"

    def compute_loss(self, model, probe_batch, forget_batch, step):
        ce = F.cross_entropy(model(probe_batch["pixel_values"]).logits, probe_batch["labels"])
        if step < 1:
            return {"loss": ce, "probe_ce": ce}
        if self.break_kind == "nan":
            return {"loss": ce * float("nan"), "probe_ce": ce * float("nan")}
        weight = next(model.parameters())
        return {"loss": ce + torch.sqrt((weight - weight.detach()).abs().sum()), "probe_ce": ce}


@pytest.mark.parametrize("break_kind", ["nan", "gradient"])
def test_divergence_stops_before_the_update_with_a_clear_error(tmp_path, monkeypatch, break_kind):
    monkeypatch.setattr(BreaksAtStep2, "break_kind", break_kind)
    forget_images, forget_labels, probes, anchors = tiny_problem()
    args = UnlearningConfig(output_dir=str(tmp_path), method="test_breaks_at_step_2", per_device_train_batch_size=16,
                            num_train_epochs=3, stop_at_zero_forget_accuracy=False, deletion_loss="ascent",
                            disable_tqdm=True)
    trainer = UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes, anchors=anchors)
    after_step_1 = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            after_step_1.update(copy.deepcopy(model.state_dict()))

    trainer.add_callback(Snapshot())
    with pytest.raises(UnlearningDiverged, match="diverged at step 2: non-finite "
                       + ("probe_ce, loss" if break_kind == "nan" else "gradients")) as error:
        trainer.train()
    assert error.value.step == 2 and "--deletion_loss nearest_wrong" in str(error.value)
    assert isinstance(error.value, UserInputError)  # the scripts print it on one line, exit code 2
    state = trainer.model.state_dict()
    # step 2's update never applied, the BatchNorm statistics its forward moved taken back
    assert all(torch.equal(state[name], value) for name, value in after_step_1.items())
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_trainer_uses_registry_method_sgd_and_logs_every_step(tmp_path):
    assert "test_constant_ce" in METHOD_REGISTRY
    forget_images, forget_labels, probes, anchors = tiny_problem()
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    args = UnlearningConfig(
        output_dir=str(tmp_path),
        method="test_constant_ce",
        per_device_train_batch_size=16,
        forget_batch_size=3,
        num_train_epochs=2,
        stop_at_zero_forget_accuracy=False,
        drift_num_probes=10,
        disable_tqdm=True,
    )
    trainer = UnlearningTrainer(model, args, forget_images, forget_labels, probes, anchors=anchors)
    trainer.train()
    optimizer = trainer.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)
    assert isinstance(inner, torch.optim.SGD)
    assert inner.param_groups[0]["momentum"] == 0.5 and inner.param_groups[0]["weight_decay"] == 0.001
    assert trainer.method.steps_seen == list(range(6)) and all(trainer.method.training_modes)
    steps = [entry for entry in trainer.state.log_history if "forget_acc" in entry]
    assert [entry["step"] for entry in steps] == list(range(1, 7))
    assert all({"probe_ce", "structural_drift", "loss"} <= set(entry) for entry in steps)
    assert "structural_drift_features" not in steps[0]  # no projector: drift read from norm(M(g))
    result = trainer.unlearning_result
    assert result.steps == 6 and not result.stopped_at_zero and result.stopped_step is None
    # the Before copy is frozen and untouched; the model itself changed
    assert all(not p.requires_grad for p in trainer.original_model.parameters())
    assert not trainer.original_model.training
    for key, value in trainer.original_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])


def test_trainer_rejects_bad_inputs(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    args = UnlearningConfig(output_dir=str(tmp_path), disable_tqdm=True)
    with pytest.raises(ValueError, match="forget_labels"):
        UnlearningTrainer(tiny_model(), args, forget_images, forget_labels[:2], probes, anchors=anchors)
    with pytest.raises(ValueError, match="needs anchors"):
        UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes)


def test_run_unlearning_returns_model_and_info(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(num_probes=16)
    model, info = run_unlearning(
        tiny_model(),
        "neggrad",
        forget_images,
        forget_labels,
        probes,
        anchors=anchors,
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=1,
        disable_tqdm=True,
    )
    keys = {"steps", "stopped_at_zero", "stopped_step", "forget_accuracy", "seconds", "seconds_phases", "log_history"}
    assert keys | {"config"} <= set(info) and {"prepare", "checks", "method_hooks"} <= set(info["seconds_phases"])
    assert info["steps"] == 1 and info["config"]["learning_rate"] == 1e-3 and not model.training
    assert info["log_history"][0]["deletion"] < 0

    config = UnlearningConfig(output_dir=str(tmp_path), method="adv", per_device_train_batch_size=16)
    _, info = run_unlearning(
        tiny_model(), config, forget_images, forget_labels, probes, num_train_epochs=1, disable_tqdm=True
    )
    assert info["steps"] == 1 and info["config"]["method"] == "adv" and "retention" in info["log_history"][0]
