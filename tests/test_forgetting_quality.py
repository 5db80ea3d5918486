"""The competition's forgetting-quality estimate on synthetic statistics with known answers."""

import math

import numpy as np
import pytest
import torch

from hf_structguard.evaluation.forgetting_quality import (
    DELTA,
    epsilon_from_rates,
    epsilon_score,
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
    per_example_epsilon,
    threshold_attack_rates,
)


def test_identical_distributions_score_one():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(16, 5))
    assert per_example_epsilon(outputs, outputs.copy()).tolist() == [0.0] * 5
    assert forgetting_quality(outputs, outputs.copy()) == 1.0


def test_separable_distributions_score_the_floor_in_either_direction():
    rng = np.random.default_rng(1)
    retrained = rng.normal(size=(16, 3))
    for unlearned in (retrained + 100.0, retrained - 100.0):  # pushed above or below every retrained model
        assert np.isinf(per_example_epsilon(unlearned, retrained)).all()
        assert forgetting_quality(unlearned, retrained) == 2.0**-12  # the last bin: practically zero


def test_half_separable_forget_set_averages_the_two():
    rng = np.random.default_rng(2)
    retrained = rng.normal(size=(16, 4))
    unlearned = retrained.copy()
    unlearned[:, 2:] += 100.0
    assert forgetting_quality(unlearned, retrained) == pytest.approx((1.0 + 2.0**-12) / 2)


def test_epsilon_of_hand_computed_rates_and_its_bins():
    # FPR 0.25, FNR 0.25: ε = log(1 - 0.01 - 0.25) - log(0.25) = log(2.96) ≈ 1.085, the third bin [1, 1.5).
    epsilon = epsilon_from_rates([0.25], [0.25])
    assert epsilon == pytest.approx(math.log((1 - DELTA - 0.25) / 0.25))
    assert epsilon_score([epsilon]).tolist() == [0.25]
    assert epsilon_from_rates([0.0], [0.5]) == 0.0  # one rate 0: discarded
    assert epsilon_from_rates([0.0, 0.5], [0.0, 0.5]) == math.inf
    assert epsilon_score([0.0, 0.49, 0.5, 5.99, 6.0, math.inf]).tolist() == [1, 1, 0.5, 2.0**-11, 2.0**-12, 2.0**-12]


def test_threshold_attack_rates_cover_both_orientations():
    fpr, fnr = threshold_attack_rates(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
    assert (0.0, 0.0) in set(zip(fpr.tolist(), fnr.tolist()))  # "above 2 means unlearned" separates perfectly
    fpr, fnr = threshold_attack_rates(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert (0.0, 0.0) in set(zip(fpr.tolist(), fnr.tolist()))  # and so does the opposite rule


def test_closer_distributions_score_higher():
    rng = np.random.default_rng(3)
    retrained = rng.normal(size=(64, 20))
    scores = [forgetting_quality(rng.normal(loc=shift, size=(64, 20)), retrained) for shift in (0.0, 1.0, 3.0)]
    assert scores[0] > scores[1] > scores[2] and 0.0 <= scores[2] and scores[0] <= 1.0


def test_logit_scaled_confidence_is_the_log_odds_of_the_true_label():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), dim=1)[torch.arange(2), labels]
    assert logit_scaled_confidence(logits, labels) == pytest.approx(torch.log(p / (1 - p)).numpy())


def test_final_score_multiplies_the_accuracy_ratios():
    score = final_score(0.5, retain_unlearned=90.0, retain_retrained=100.0, test_unlearned=80.0, test_retrained=80.0)
    assert score == {"retain_ratio": 0.9, "test_ratio": 1.0, "final_score": pytest.approx(0.45)}
    with pytest.raises(ValueError, match="must be > 0"):
        final_score(1.0, 1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same number of examples"):
        per_example_epsilon(np.zeros((2, 3)), np.zeros((2, 4)))
