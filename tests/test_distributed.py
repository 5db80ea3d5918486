"""Two CPU processes under ``accelerate launch --multi_gpu`` (gloo) end with identical models and decisions."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).parent
ACCELERATE = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    if ACCELERATE is None:
        pytest.skip("the accelerate launcher is not installed")
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    command = [
        ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(TESTS / "_dist_worker.py"), str(out),
    ]  # fmt: skip
    completed = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return out


@pytest.mark.parametrize("name", ["structguard", "neggrad"])
def test_ranks_end_with_identical_parameters_buffers_and_state(two_process_run, name):
    ranks = [load_file(two_process_run / f"{name}-rank{r}.safetensors") for r in range(2)]
    assert set(ranks[0]) == set(ranks[1])
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    if name == "structguard":  # importance, S_ori and BatchNorm buffers are part of the compared state
        assert any(key.startswith("method.importance.") for key in ranks[0]) and "s_ori" in ranks[0]
        assert any(key.endswith("running_mean") for key in ranks[0])


def test_ranks_take_identical_stopping_decisions(two_process_run):
    structguard, neggrad = (
        [json.loads((two_process_run / f"{name}-rank{r}.json").read_text()) for r in range(2)]
        for name in ("structguard", "neggrad")
    )
    for results in (structguard, neggrad):
        assert results[0]["world_size"] == results[1]["world_size"] == 2
        for key in ("steps", "stopped_at_zero", "stopped_step", "forget_acc"):
            assert results[0][key] == results[1][key], key
    assert neggrad[0]["stopped_at_zero"]
    # baselines may stop from the first step (as in the reference); the stop is the first step at A_f = 0
    assert neggrad[0]["stopped_step"] >= 1 and neggrad[0]["forget_acc"][-1] == 0.0 and 0.0 not in neggrad[0]["forget_acc"][:-1]
    assert structguard[0]["steps"] == 6


def test_checkpoints_hold_the_model_and_the_method_state(two_process_run):
    checkpoints = sorted(p.name for p in (two_process_run / "structguard").iterdir())
    assert checkpoints == ["checkpoint-6"]  # saved at steps 2, 4, 6; save_total_limit=1 keeps the latest
    for checkpoint in checkpoints:
        files = {p.name for p in (two_process_run / "structguard" / checkpoint).iterdir()}
        assert {"model.safetensors", "method_state.safetensors", "trainer_state.json"} <= files
