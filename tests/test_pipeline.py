"""End-to-end: scripts/run.py on the embedded digits default, shrunk so it runs in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
run_script = load_script("scripts/run.py")

TINY = [
    "--default_backbone", "resnet10t",
    "--default_epochs", "2",
    "--forget_k", "4",
    "--probes_per_image", "4",
    "--probe_num_steps", "5",
    "--importance_num_samples", "64",
    "--num_train_epochs", "3",
    "--retain_eval_size", "300",
    "--disable_tqdm", "true",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "out"
    results = run_script.main([*TINY, "--output_dir", str(output_dir), "--methods", "structguard", "neggrad"])
    return output_dir, results


def test_results_file_has_every_field_for_every_model(finished_run):
    output_dir, results = finished_run
    on_disk = json.loads((output_dir / "results.json").read_text())
    assert on_disk == results
    assert list(results["methods"]) == ["before", "structguard", "neggrad"]
    for name, metrics in results["methods"].items():
        for key in ("A_test", "A_r", "A_f"):
            assert 0.0 <= metrics[key] <= 100.0, (name, key)
        for case in ("retain", "forget"):
            assert set(metrics["retrieval"][case]) == {"R@1", "R@5", "R@10", "mAP"}
        assert metrics["sizes"]["forget"] == 4 and metrics["sizes"]["retain"] == 300
        assert "forget_member_rate" in metrics["mia"]
        assert metrics["seconds_phases"]["evaluation"] >= 0
    for name in ("structguard", "neggrad"):
        assert results["methods"][name]["consistency"]["mean"] <= 1.0
        assert results["methods"][name]["steps"] >= 1
        assert 0.0 <= results["methods"][name]["probe_hit_rate"] <= 100.0
    assert results["methods"]["before"]["A_test"] > 50  # the cached Before model really learned digits


def test_forget_ids_stay_private(finished_run):
    output_dir, results = finished_run
    private = json.loads((output_dir / "forget_set.json").read_text())
    assert len(private["indices"]) == 4
    assert results["forget_set"]["k"] == 4 and "indices" not in results["forget_set"]
    card = (output_dir / "structguard" / "README.md").read_text()
    assert "model-index" in card
    salt = (output_dir / "deletion_salt.txt").read_text().strip()
    assert salt not in card and salt not in json.dumps(results)


def test_models_plots_and_anchors_are_written(finished_run):
    output_dir, results = finished_run
    for folder in ("before", "structguard", "neggrad", "anchors"):
        assert (output_dir / folder).is_dir()
    assert (output_dir / "plots" / "structural_drift.png").stat().st_size > 0
    assert results["run_config"]["anchors"]["metadata"]["encoder"]  # the packaged MiniLM, offline


def test_second_run_reuses_the_cached_before_model(finished_run, tmp_path):
    output_dir, results = finished_run
    again = run_script.main([*TINY, "--output_dir", str(tmp_path / "again"), "--method", "neggrad"])
    assert again["run_config"]["model"]["before_source"] == results["run_config"]["model"]["before_source"]
    assert again["run_config"]["seconds"]["before_model"] < 5
    assert again["methods"]["before"]["A_test"] == results["methods"]["before"]["A_test"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--method", "no_such_method"], "unknown unlearning method"),
        (["--forget_k", "100000"], "k"),
        (["--push_to_hub", "true"], "hub_model_id"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path, bad, message):
    output_dir = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        run_script.main([*TINY, "--output_dir", str(output_dir), *bad])
    assert not output_dir.exists()


def test_config_file_options_are_overridden_by_the_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("forget_k: 7\nmethods: [structguard, adv]\noutput_dir: from-file\n")
    tokens = run_script.config_file_tokens(["--config", str(config), "--forget_k", "3"])
    parser = run_script.HfArgumentParser(run_script.ARGUMENT_CLASSES)
    data_args, _, _, run_args, config_args = parser.parse_args_into_dataclasses(args=tokens)
    assert data_args.forget_k == 3
    assert run_args.methods == ["structguard", "adv"]
    assert config_args.output_dir == "from-file"


def test_help_documents_every_option():
    shown = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--forget_k", "--methods", "--text_encoder", "--probe_epsilon", "--alignment_measure", "--config",
                   "--resume_from_checkpoint", "--keep_checkpoints", "--allow_incomplete", "--save_total_limit"):
        assert option in shown


def test_default_text_encoder_is_clip_when_the_hub_answers_else_the_packaged_one(monkeypatch, local_hub):
    from huggingface_hub import constants

    from hf_structguard import pipeline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", local_hub.endpoint)
    assert pipeline.default_text_encoder() == pipeline.CLIP_TEXT_ENCODER
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert pipeline.default_text_encoder() == pipeline.PACKAGED_TEXT_ENCODER
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", local_hub.endpoint)
    assert pipeline.default_text_encoder() == pipeline.PACKAGED_TEXT_ENCODER


def test_settle_config_sizes_the_importance_budget_unless_set(tmp_path):
    from hf_structguard.pipeline import settle_config
    from hf_structguard.trainer import UnlearningConfig

    config = UnlearningConfig(output_dir=str(tmp_path))
    settled = settle_config(config, num_retained=1421)
    assert settled.importance_num_samples == 1421 and settled.learning_rate == config.learning_rate
    fixed = UnlearningConfig(output_dir=str(tmp_path), importance_num_samples=64)
    assert settle_config(fixed, num_retained=1421).importance_num_samples == 64


def test_incomplete_deletion_warns_marks_the_receipt_and_is_not_pushed(tmp_path, capsys):
    from hf_structguard.errors import UserInputError

    out = tmp_path / "partial"
    with pytest.raises(UserInputError, match="--push_to_hub: neggrad did not complete the deletion"):
        run_script.main([*TINY, "--method", "neggrad", "--learning_rate", "1e-9", "--num_train_epochs", "1",
                         "--mia", "false", "--retrieval", "false", "--plots", "false", "--output_dir", str(out),
                         "--push_to_hub", "true", "--hub_model_id", "test-user/partial"])
    assert "WARNING: neggrad did NOT complete the deletion" in capsys.readouterr().err
    receipt = json.loads((out / "neggrad" / "deletion_receipt.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert receipt["complete"] is False and receipt["remaining_forget_accuracy"] == results["methods"]["neggrad"]["A_f"] > 0
    assert "**Incomplete deletion.**" in (out / "neggrad" / "README.md").read_text()


def test_private_files_are_owner_only(finished_run):
    import stat

    output_dir, _ = finished_run
    for name in ("forget_set.json", "deletion_salt.txt"):
        assert stat.S_IMODE((output_dir / name).stat().st_mode) == 0o600, name
