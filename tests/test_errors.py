"""Bad input at the command line: one line naming the option and the fix, exit code 2, no traceback, and the
output folder left as it was; library calls raise the typed UserInputError (a ValueError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _unlearning_helpers import tiny_model
from PIL import Image

from hf_structguard.errors import EXIT_USER_ERROR, UserInputError, option_errors, run_cli

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
run_script = load_script("scripts/run.py")
sequential_script = load_script("scripts/sequential.py")

TINY = ["--forget_k", "4", "--probes_per_image", "2", "--probe_num_steps", "2", "--num_train_epochs", "1",
        "--disable_tqdm", "true"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt-model"
    tiny_model(num_labels=10).save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 4)
    flat = root / "flat"
    for split in ("train", "test"):
        (flat / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(flat / split / f"{i}.png")
    return {"corrupt": corrupt, "flat": flat}


CASES = {
    "hub model offline": (["--model_name_or_path", "nobody/no-such-model"],
                          "--model_name_or_path nobody/no-such-model: not on this machine and the Hub is not reachable"),
    "timm name offline": (["--model_name_or_path", "resnet18"],
                          "--model_name_or_path resnet18: timm fetches this architecture's pretrained weights"),
    "unknown model": (["--model_name_or_path", "no_such_architecture"],
                      "--model_name_or_path no_such_architecture: 'no_such_architecture' is neither a folder"),
    "corrupt safetensors": (["--model_name_or_path", "{corrupt}"],
                            "--model_name_or_path {corrupt}: {corrupt}/model.safetensors is not a readable safetensors"),
    "anchors path": (["--anchors", "/no/such/anchors"], "--anchors: no such anchor folder /no/such/anchors"),
    "anchors hub id": (["--anchors", "nobody/anchors"],
                       "--anchors: no local folder nobody/anchors, and as a Hub dataset: not on this machine"),
    "imagefolder without classes": (["--dataset", "{flat}"],
                                    "--dataset {flat}: split 'train' has rows without a label in column 'label'. An "
                                    "image folder needs one sub-folder per class"),
    "bad option value": (["--learning_rate", "-1"], "learning_rate must be > 0"),
    "unknown method": (["--method", "nope"], "unknown unlearning method"),
    "resume without checkpoints": (["--resume_from_checkpoint", "true"], "--resume_from_checkpoint true: no checkpoint"),
    "missing config": (["--config", "/no/such.yaml"], "--config /no/such.yaml: no such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_leaves_the_output_folder_as_it_was(case, bad_inputs, tmp_path, capsys):
    arguments, message = CASES[case]
    arguments = [a.format(**bad_inputs) for a in arguments]
    message = message.format(**bad_inputs)
    output_dir = tmp_path / "existing"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("an earlier run's file\n")
    before = _snapshot(output_dir)
    assert run_cli(run_script.main, [*TINY, "--output_dir", str(output_dir), *arguments]) == EXIT_USER_ERROR
    err = capsys.readouterr().err  # may hold progress bars (datasets) before the error
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and err.count("error: ") == 1, err
    assert "Traceback" not in err
    assert _snapshot(output_dir) == before


def test_sequential_script_reports_bad_input_the_same_way(tmp_path, capsys):
    code = run_cli(sequential_script.main, [*TINY, "--num_requests", "2", "--request_k", "2", "--output_dir",
                                            str(tmp_path / "never"), "--anchors", "/no/such/anchors"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and err == "error: --anchors: no such anchor folder /no/such/anchors (nor a Hub dataset id)"
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("script", ["run", "sequential", "pretrain"])
def test_an_output_dir_under_a_file_is_one_line_before_any_work(script, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    arguments = {"run": [*TINY], "sequential": [*TINY, "--num_requests", "2", "--request_k", "2"],
                 "pretrain": ["--epochs", "1"]}[script]
    main = {"run": run_script.main, "sequential": sequential_script.main,
            "pretrain": load_script("scripts/pretrain.py").main}[script]
    assert run_cli(main, [*arguments, "--output_dir", str(blocker / "out")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err == f"error: --output_dir {blocker / 'out'}: cannot create a folder there, {blocker} is a file; " \
                  "choose another folder"
    assert blocker.read_text() == "not a folder\n"


def test_a_read_only_output_dir_is_one_line(tmp_path, capsys, monkeypatch):
    from hf_structguard import errors

    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.access(read_only, os.W_OK):  # root ignores the mode bits: stand in for a read-only file system
        monkeypatch.setattr(errors.os, "access", lambda path, mode: Path(path) != read_only)
    assert run_cli(run_script.main, [*TINY, "--output_dir", str(read_only / "out")]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.strip().endswith(f"{read_only} is not writable; choose a folder you can write to")


def test_check_output_dir_accepts_new_and_existing_folders(tmp_path):
    from hf_structguard.errors import check_output_dir

    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(UserInputError, match="--dir_option .*is a file"):
        (tmp_path / "f").write_text("")
        check_output_dir(tmp_path / "f", option="--dir_option")


def test_library_calls_raise_the_typed_error():
    from hf_structguard.anchors import AnchorSet

    with pytest.raises(UserInputError, match="no such anchor folder"):
        AnchorSet.load("/no/such/anchors")
    with pytest.raises(ValueError):  # a UserInputError is a ValueError for existing callers
        with option_errors("--x"):
            raise ValueError("bad")
    with pytest.raises(KeyError):  # anything else is a bug, not bad input: it keeps its type and traceback
        with option_errors("--x"):
            raise KeyError("bug")


def test_script_exits_with_code_2_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "--output_dir", str(tmp_path / "x"),
                           "--forget_k", "0", "--momentum", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == EXIT_USER_ERROR
    assert done.stderr.strip() == "error: momentum must be in [0, 1), got 2.0" and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
