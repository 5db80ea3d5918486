"""benchmarks/importance_budget.py: Spearman ρ, the tolerance rule, and one tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from hf_structguard.data import load_image_data

from _scripts import load_script
from _unlearning_helpers import tiny_model


@pytest.fixture(scope="module")
def budget():
    return load_script("benchmarks/importance_budget.py")


def test_spearman_with_ties_and_the_tolerance_rule(budget):
    a = np.array([0.0, 0.0, 1.0, 3.0, 2.0, 5.0])
    b = np.array([0.0, 1.0, 1.0, 2.0, 4.0, 3.0])
    assert budget.spearman(rankdata(a), b) == pytest.approx(spearmanr(a, b).statistic)
    assert budget.spearman(rankdata(a), 2 * a + 1) == pytest.approx(1.0)
    results = [{"num_samples": 10, "spearman_vs_largest": 0.90}, {"num_samples": 20, "spearman_vs_largest": 0.96},
               {"num_samples": 40, "spearman_vs_largest": 0.99}, {"num_samples": 80, "spearman_vs_largest": 1.0}]
    assert budget.smallest_within(results, 0.95) == 20
    assert budget.smallest_within(results[:1], 0.95) is None
    per_tensor = [{"num_samples": 10, "min_tensor_spearman": 0.5}, {"num_samples": 20, "min_tensor_spearman": 0.97}]
    assert budget.smallest_within(per_tensor, 0.95, "min_tensor_spearman") == 20
    reference = {"w": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([0.5, 0.5])}  # "b" constant: no per-tensor ρ
    other = {"w": np.array([1.0, 3.0, 2.0, 4.0]), "b": np.array([0.5, 0.5])}
    stats = budget.agreement(reference, other)
    assert stats["min_tensor_spearman"] == pytest.approx(0.8)
    assert stats["relative_l2_error"] == pytest.approx(np.sqrt(2) / np.sqrt(30.5))
    assert budget.agreement(reference, reference)["relative_l2_error"] == 0.0


def test_importance_budget_end_to_end_on_digits(budget, tmp_path):
    data = load_image_data(None)
    model = tiny_model(num_labels=data.num_classes)
    model.save_pretrained(tmp_path / "before")
    content = budget.main(["--model_name_or_path", str(tmp_path / "before"), "--k", "2", "--probe_num_steps", "1",
                           "--budgets", "32", "64", "512", "--largest", "128",
                           "--output", str(tmp_path / "out" / "tiny")])
    retain = len(data.train) - 2
    assert [r["num_samples"] for r in content["results"]] == [32, 64, 128]  # budgets above the largest dropped
    assert content["results"][-1]["spearman_vs_largest"] == pytest.approx(1.0)
    assert all(-1 <= r["spearman_vs_largest"] <= 1 and r["seconds"] > 0 for r in content["results"])
    assert content["results"][-1]["relative_l2_error"] == 0.0
    assert json.loads((tmp_path / "out" / "tiny.json").read_text())["retain_size"] == retain
    assert "ρ vs largest" in (tmp_path / "out" / "tiny.md").read_text()
    assert content["smallest_within_tolerance_per_tensor"] in (32, 64, 128)
