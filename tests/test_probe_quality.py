"""benchmarks/probe_quality.py: the per-setting summary, the fewest-iterations rule, one tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from hf_structguard.data import load_image_data, select_forget_set
from hf_structguard.probes import probes_for_config, target_hit_rate
from hf_structguard.trainer import UnlearningConfig

from _scripts import ROOT, load_script
from _unlearning_helpers import tiny_model


@pytest.fixture(scope="module")
def quality():
    return load_script("benchmarks/probe_quality.py")


def _run(method, k, seed, iterations, rate):
    return {"method": method, "epsilon": 3.0, "k": k, "seed": seed, "iterations": iterations,
            "step_size": 7.5 / iterations, "target_hit_rate": rate, "seconds": 1.0}


def test_summary_and_fewest_iterations(quality):
    results = [_run("structguard", 16, 0, 10, 90.0), _run("structguard", 16, 1, 10, 96.0),
               _run("structguard", 16, 0, 100, 95.0), _run("structguard", 16, 1, 100, 97.0),
               _run("structguard", 16, 0, 20, 94.0), _run("structguard", 16, 1, 20, 97.0),
               _run("l2ul", 16, 0, 10, 80.0)]
    summary = quality.summarise(results, target=95.0)
    assert [(r["method"], r["iterations"]) for r in summary] == [
        ("l2ul", 10), ("structguard", 10), ("structguard", 20), ("structguard", 100)]
    ten = summary[1]
    assert ten["mean"] == pytest.approx(93.0) and ten["min"] == 90.0 and ten["seeds"] == [0, 1]
    assert ten["std"] == pytest.approx(4.242640687) and not ten["reaches_target"]
    assert summary[0]["std"] == 0.0  # one seed
    assert quality.fewest_iterations(summary) == {"l2ul k=16": None, "structguard k=16": 20}


def test_probe_quality_end_to_end_matches_the_benchmark_probes(quality, tmp_path):
    data = load_image_data(None)
    model = tiny_model(num_labels=data.num_classes)
    model.save_pretrained(tmp_path / "before")
    content = quality.main(["--model_name_or_path", str(tmp_path / "before"), "--ks", "2", "--seeds", "0", "1",
                            "--iterations", "1", "2", "--target", "0", "--output", str(tmp_path / "out" / "tiny")])
    assert len(content["results"]) == 2 * 2 * 2  # seeds × methods × iteration counts
    assert {r["epsilon"] for r in content["results"]} == {3.0, 4.0}  # structguard's and the baselines' ε
    assert content["fewest_iterations"] == {"l2ul k=2": 1, "structguard k=2": 1}  # target 0: always reached
    # the same set the benchmark would build for structguard, seed 1, 2 iterations
    model.eval()
    images, labels = data.tensors("train", None, model.config.image_size)
    forget = torch.as_tensor(select_forget_set(len(labels), k=2, seed=1).indices)
    config = UnlearningConfig(method="structguard", use_cpu=True, probe_num_steps=2).for_method("structguard", seed=1)
    expected = target_hit_rate(model, probes_for_config(model, images[forget], labels[forget], data.num_classes,
                                                        config))
    (measured,) = [r["target_hit_rate"] for r in content["results"]
                   if (r["method"], r["seed"], r["iterations"]) == ("structguard", 1, 2)]
    assert measured == pytest.approx(expected)
    assert json.loads((tmp_path / "out" / "tiny.json").read_text())["summary"] == content["summary"]
    assert "probes hitting their target" in (tmp_path / "out" / "tiny.md").read_text()


BENCHMARK_SCRIPTS = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "benchmarks").glob("[!_]*.py"))


@pytest.mark.parametrize("script", BENCHMARK_SCRIPTS)
def test_benchmark_scripts_print_their_help_with_examples_line_by_line(script, capsys):
    module = load_script(script)
    with pytest.raises(SystemExit) as done:  # argparse formats every help text: a bare % in one would raise
        module.main(["--help"])
    printed = capsys.readouterr().out
    assert done.value.code == 0 and "HF_STRUCTGUARD_SHARED" in printed
    examples = [line for line in module.__doc__.splitlines() if line.startswith("    ")]
    assert len(examples) >= 2, f"{script}: its docstring should end with example commands"
    assert all(line in printed.splitlines() for line in examples), "an example command was re-wrapped"
