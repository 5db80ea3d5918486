"""Smoke test of benchmarks/run_benchmark.py on the embedded digits data with tiny settings."""

from __future__ import annotations

import json

import pytest

from hf_structguard.data import load_image_data
from hf_structguard.modeling import build_model

from _scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/run_benchmark.py")


def test_variants_and_profiles(bench):
    variants = bench.method_variants(["neggrad", "structguard"], ["components", "anchors"])
    names = [name for name, _, _ in variants]
    assert names[:2] == ["neggrad", "structguard"]
    assert "structguard[-SA]" in names and "structguard[visual]" in names
    assert all(method == "structguard" for name, method, _ in variants if name.startswith("structguard["))
    with pytest.raises(ValueError, match="unknown ablation"):
        bench.method_variants(["neggrad"], ["nope"])
    with pytest.raises(ValueError):
        bench.method_variants(["no-such-method"], [])
    assert bench.PROFILES["cpu"]["ks"] == [16, 64] and bench.PROFILES["cuda"]["ks"] == [16, 64, 128, 256]
    assert bench.PROFILES["cuda"]["retain_eval_size"] is None and bench.PROFILES["cuda"]["probe_num_steps"] == 100


def test_benchmark_end_to_end_on_digits(bench, tmp_path):
    data = load_image_data(None)
    model = build_model("resnet10t", num_labels=data.num_classes, class_names=data.class_names, image_size=16,
                        pretrained=False)
    model.save_pretrained(tmp_path / "before")
    out = tmp_path / "bench"
    content = bench.main([
        "--model_name_or_path", str(tmp_path / "before"),
        "--methods", "neggrad", "fisher", "structguard",
        "--ablations", "anchors",
        "--example_methods", "structguard",
        "--ks", "2", "--seeds", "0", "1",
        "--retain_eval_size", "48", "--test_eval_size", "40",
        "--probe_num_steps", "2", "--importance_num_samples", "16",
        "--num_train_epochs", "1", "--max_steps", "2", "--drift_every_steps", "1",
        "--output_dir", str(out),
    ])
    assert content["complete"]
    runs = content["runs"]
    assert {r["method"] for r in runs} == {"before", "neggrad", "fisher", "structguard", "structguard[visual]"}
    assert len(runs) == 2 * 5
    for run in runs:
        assert {"A_test", "A_r", "A_f", "retrieval", "mia", "seconds_phases", "peak_memory"} <= set(run)
        assert run["sizes"]["retain"] == 48 and run["sizes"]["test"] == 40
        assert run["eval_images_per_second"] > 0
        if run["method"] != "before":
            assert {"probes", "importance_setup", "unlearning", "evaluation"} <= set(run["seconds_phases"])
            assert run["steps"] <= 2
    summary = content["summary"]["2"]["structguard"]
    assert summary["seeds"] == [0, 1] and {"mean", "std"} <= set(summary["A_test"])
    assert content["raw_forward_images_per_second"] > 0
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["settings"]["max_steps"] == 2
    table = (out / "table.md").read_text()
    assert "A_test" in table and "100−A_f" in table and "| structguard[visual] |" in table and "±" in table
    assert "test images" in table and "raw fwd img/s" in table
    for name in ("consistency_k2.png", "retrieval_k2.png", "structural_drift_k2.png"):
        assert (out / "plots" / name).stat().st_size > 0
