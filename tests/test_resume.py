"""Resuming interrupted runs: a killed run continued from its last checkpoint ends bit for bit as an uninterrupted
one (trainer, scripts/run.py with several methods, scripts/sequential.py); checkpoints stay bounded and go away
when the run completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _unlearning_helpers import tiny_model, tiny_problem
from safetensors.torch import load_file

from hf_structguard.errors import UserInputError
from hf_structguard.trainer import UnlearningConfig, UnlearningTrainer
from hf_structguard.trainer.trainer import METHOD_STATE_NAME, checkpoint_is_final

from _scripts import load_script

run_script = load_script("scripts/run.py")
sequential_script = load_script("scripts/sequential.py")

TINY = ["--default_backbone", "resnet10t", "--default_epochs", "2", "--forget_k", "4", "--probes_per_image", "4",
        "--probe_num_steps", "5", "--importance_num_samples", "64", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "4", "--save_steps", "2", "--retain_eval_size", "300",
        "--disable_tqdm", "true", "--plots", "false", "--mia", "false", "--retrieval", "false"]


class Killed(Exception):
    """Stands for the process being killed."""


def kill_at(monkeypatch, step: int, method: str | None = None, output_dir_part: str | None = None):
    """Make the trainer die at the start of global ``step`` (0-based) of the run of ``method`` / whose output_dir
    contains ``output_dir_part``."""
    original = UnlearningTrainer.training_step

    def training_step(self, *args, **kwargs):
        if (self.state.global_step == step and (method is None or self.args.method == method)
                and (output_dir_part is None or output_dir_part in self.args.output_dir)):
            raise Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(UnlearningTrainer, "training_step", training_step)


def _without_timing(value):
    """Results and logs minus what measures time (differs between any two runs)."""
    if isinstance(value, dict):
        return {key: _without_timing(item) for key, item in value.items()
                if not key.startswith(("seconds", "train_runtime", "train_samples_per", "train_steps_per"))
                and key not in ("train_loss", "total_flos")}
    if isinstance(value, list):
        return [_without_timing(item) for item in value if not (isinstance(item, dict) and "train_runtime" in item)]
    return value


def _same_weights(folder_a: Path, folder_b: Path) -> None:
    files = sorted(path.name for path in folder_a.glob("*.safetensors"))
    assert files and files == sorted(path.name for path in folder_b.glob("*.safetensors"))
    for name in files:
        a, b = load_file(folder_a / name), load_file(folder_b / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def _args(tmp_path, name, **overrides):
    # per-sample stopping off: with it this tiny forget set goes in one step, and the tests need runs that
    # outlive a kill at step 6 (the option keeps no state of its own to resume)
    values = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=12, forget_batch_size=4,
                  num_train_epochs=2, importance_num_samples=24, save_strategy="steps", save_steps=2,
                  learning_rate=0.02, momentum=0.9, per_sample_stopping=False, disable_tqdm=True)
    return UnlearningConfig(**{**values, **overrides})


def test_trainer_resume_is_bit_exact_and_a_final_checkpoint_needs_no_step(tmp_path, monkeypatch):
    forget_images, forget_labels, probes, anchors = tiny_problem()  # 48 probes, 12 per step: 4 steps per pass
    full = UnlearningTrainer(tiny_model(), _args(tmp_path, "full"), forget_images, forget_labels, probes, anchors)
    full.train()

    with monkeypatch.context() as patch:
        kill_at(patch, 5)  # dies in step 6, after checkpoints 2 and 4 (importance was computed in step 2)
        with pytest.raises(Killed):
            UnlearningTrainer(tiny_model(), _args(tmp_path, "resumed"), forget_images, forget_labels, probes,
                              anchors).train()
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["checkpoint-4"]  # save_total_limit 1
    assert (tmp_path / "resumed" / "checkpoint-4" / METHOD_STATE_NAME).is_file()  # the importance
    resumed = UnlearningTrainer(tiny_model(), _args(tmp_path, "resumed"), forget_images, forget_labels, probes, anchors)
    resumed.train(resume_from_checkpoint="true")
    assert resumed.unlearning_result.steps == full.unlearning_result.steps
    assert resumed.unlearning_result.stopped_step == full.unlearning_result.stopped_step
    assert resumed.unlearning_result.forget_accuracy == full.unlearning_result.forget_accuracy
    expected = full.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert _without_timing(resumed.state.log_history) == _without_timing(full.state.log_history)

    # The final checkpoint (written at the step that ended training) restores without another step.
    final = tmp_path / "resumed" / f"checkpoint-{full.state.global_step}"
    assert checkpoint_is_final(final)
    monkeypatch.setattr(UnlearningTrainer, "training_step", lambda *a, **k: pytest.fail("trained again"))
    again = UnlearningTrainer(tiny_model(), _args(tmp_path, "resumed"), forget_images, forget_labels, probes, anchors)
    again.train(resume_from_checkpoint=str(final))
    assert again.unlearning_result.to_dict() | {"seconds": 0} == full.unlearning_result.to_dict() | {"seconds": 0}
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_early_stop_is_checkpointed_and_restored(tmp_path, monkeypatch):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    # forget accuracy 0 from step 5 on: stops at step 5 (the second pass), not a multiple of save_steps
    monkeypatch.setattr(UnlearningTrainer, "forget_accuracy", lambda self: 0.0 if self.state.global_step >= 5 else 50.0)
    args = _args(tmp_path, "stop", num_train_epochs=5, save_steps=1000)
    stopped = UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes, anchors)
    stopped.train()
    assert stopped.unlearning_result.stopped_step == 5 and stopped.state.max_steps == 20
    checkpoint = tmp_path / "stop" / "checkpoint-5"  # saved because training stopped there
    assert checkpoint_is_final(checkpoint)
    restored = UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes, anchors)
    restored.train(resume_from_checkpoint="latest")
    assert restored.unlearning_result.stopped_at_zero and restored.unlearning_result.steps == 5
    for key, value in restored.model.state_dict().items():
        assert torch.equal(value, stopped.model.state_dict()[key]), key


@pytest.mark.parametrize("value, message", [("true", "no checkpoint-N folder"), ("/nonexistent/checkpoint-3",
                                                                                  "not a checkpoint folder")])
def test_resume_without_a_checkpoint_names_the_option(tmp_path, value, message):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    trainer = UnlearningTrainer(tiny_model(), _args(tmp_path, "none"), forget_images, forget_labels, probes, anchors)
    with pytest.raises(UserInputError, match=f"--resume_from_checkpoint.*{message}"):
        trainer.train(resume_from_checkpoint=value)


def test_killed_run_of_two_methods_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    arguments = [*TINY, "--methods", "structguard", "neggrad"]
    full = run_script.main([*arguments, "--output_dir", str(tmp_path / "full")])
    assert not (tmp_path / "full" / "checkpoints").exists()  # removed when the run completed

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_at(patch, 3, method="neggrad")  # structguard finished, neggrad dies in its 4th step
        with pytest.raises(Killed):
            run_script.main([*arguments, "--output_dir", str(out)])
    checkpoints = out / "checkpoints"
    assert [p.name for p in (checkpoints / "neggrad").iterdir()] == ["checkpoint-2"]
    assert len(list((checkpoints / "structguard").iterdir())) == 1 and not (out / "results.json").exists()

    resumed = run_script.main([*arguments, "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    assert _without_timing(resumed["methods"]) == _without_timing(full["methods"])
    for name in ("structguard", "neggrad"):
        _same_weights(tmp_path / "full" / name, out / name)
        logs = [json.loads((folder / name / "log_history.json").read_text()) for folder in (tmp_path / "full", out)]
        assert _without_timing(logs[0]) == _without_timing(logs[1])
    assert not checkpoints.exists()


def test_keep_checkpoints_and_resume_errors_before_any_write(tmp_path):
    out = tmp_path / "kept"
    run_script.main([*TINY, "--method", "neggrad", "--output_dir", str(out), "--keep_checkpoints", "true"])
    kept = list((out / "checkpoints" / "neggrad").iterdir())
    assert len(kept) == 1 and checkpoint_is_final(kept[0])
    for bad, message in ((["--resume_from_checkpoint", "true"], "no checkpoint under"),
                         (["--resume_from_checkpoint", str(kept[0]), "--methods", "neggrad", "adv"],
                          "one checkpoint for 2 runs")):
        fresh = tmp_path / "fresh"
        with pytest.raises(UserInputError, match=message):
            run_script.main([*TINY, "--method", "neggrad", "--output_dir", str(fresh), *bad])
        assert not fresh.exists()


def test_killed_sequence_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    arguments = [*TINY, "--num_requests", "2", "--request_k", "2", "--method", "l2ul"]
    full = sequential_script.main([*arguments, "--output_dir", str(tmp_path / "full")])
    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_at(patch, 3, output_dir_part="request_2")
        with pytest.raises(Killed):
            sequential_script.main([*arguments, "--output_dir", str(out)])
    resumed = sequential_script.main([*arguments, "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    assert _without_timing(resumed["methods"]) == _without_timing(full["methods"])
    _same_weights(tmp_path / "full" / "l2ul", out / "l2ul")
    assert not (out / "checkpoints").exists()
