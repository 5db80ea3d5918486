"""Tests of hf_structguard.evaluation against hand-computed values."""

import copy
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from transformers.utils import ModelOutput

from hf_structguard.evaluation import (
    EvalSets,
    accuracy,
    evaluate_model,
    format_results_table,
    load_metric,
    membership_inference_audit,
    mia_features,
    per_sample_loss,
    predict,
    representation_consistency,
    retrieval_metrics,
    retrieve,
    write_results,
)


@dataclass
class TinyOutput(ModelOutput):
    logits: torch.Tensor = None
    embeddings: torch.Tensor = None


class TinyModel(nn.Module):
    """Stand-in with the StructGuard forward signature; records the train flag of every call."""

    def __init__(self, num_classes=3, dim=6, image_size=4):
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, dim), nn.Dropout(0.5))
        self.classifier = nn.Linear(dim, num_classes)
        self.modes = []

    def forward(self, pixel_values, labels=None, use_projector=None, output_embeddings=False):
        self.modes.append(self.training)
        embeddings = self.backbone(pixel_values)
        return TinyOutput(logits=self.classifier(embeddings), embeddings=embeddings if output_embeddings else None)


def make_sets(num_retain=40, num_test=20, num_forget=4, retain_subsample=None, seed=0, image_size=4):
    generator = torch.Generator().manual_seed(123)

    def pair(n):
        images = torch.rand(n, 3, image_size, image_size, generator=generator)
        return images, torch.randint(0, 3, (n,), generator=generator)

    return EvalSets(test=pair(num_test), retain=pair(num_retain), forget=pair(num_forget),
                    retain_subsample=retain_subsample, seed=seed)


# ---- accuracy --------------------------------------------------------------------------------------


def test_accuracy_on_known_logits_and_predictions():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 1, 2, 2])  # predictions 0, 1, 0, 2 -> 3 of 4
    assert accuracy(logits, labels) == 75.0
    assert accuracy(torch.tensor([0, 1, 0, 2]), labels) == 75.0
    assert accuracy(torch.tensor([1]), torch.tensor([0])) == 0.0


def test_accuracy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        accuracy(torch.zeros(3, 3), torch.zeros(2, dtype=torch.long))


def test_predict_uses_eval_mode_and_restores_mode():
    torch.manual_seed(0)
    model = TinyModel()
    images = torch.rand(5, 3, 4, 4)
    model.train()
    logits, embeddings = predict(model, images, batch_size=2)
    assert model.training and model.modes == [False, False, False]  # 3 batches, all in eval mode
    assert logits.shape == (5, 3) and embeddings.shape == (5, 6)
    model.eval()
    expected = model(images, output_embeddings=True)
    torch.testing.assert_close(logits, expected.logits.detach())
    torch.testing.assert_close(embeddings, expected.embeddings.detach())
    predict(model, images)
    assert not model.training
    with pytest.raises(ValueError, match="at least one image"):
        predict(model, torch.zeros(0, 3, 4, 4))


# ---- retrieval -------------------------------------------------------------------------------------

# Four retain embeddings on the unit circle. Pairwise cosines: a0·a1 = .8, a0·a2 = .6, a0·a3 = 0,
# a1·a2 = .96, a1·a3 = .6, a2·a3 = .8.
RETAIN = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
RETAIN_LABELS = torch.tensor([0, 1, 0, 1])


def test_retrieval_retain_vs_retain_by_hand():
    # Rankings without the query itself (hits marked *):
    #   a0 (0): a1, a2*, a3   -> first hit rank 2, AP 1/2
    #   a1 (1): a2, a0, a3*   -> rank 3, AP 1/3
    #   a2 (0): a1, a3, a0*   -> rank 3, AP 1/3
    #   a3 (1): a2, a1*, a0   -> rank 2, AP 1/2
    metrics = retrieval_metrics(RETAIN * 3.0, RETAIN_LABELS, ks=(1, 2, 3, 10))  # scale-free (cosine)
    assert metrics["R@1"] == 0.0  # a query never retrieves itself (else R@1 would be 100)
    assert metrics["R@2"] == 50.0
    assert metrics["R@3"] == 100.0
    assert metrics["R@10"] == 100.0  # k clamped to the gallery
    assert metrics["mAP"] == pytest.approx(100.0 * (1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4)


def test_retrieval_forget_vs_retain_by_hand():
    forget = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    forget_labels = torch.tensor([1, 0, 0])
    # f0 (1): a0, a1*, a2, a3*  -> AP (1/2 + 2/4)/2 = .5
    # f1 (0): a3, a2*, a1, a0*  -> AP .5
    # f2 (0): a2*, a1, a3, a0*  -> AP (1 + 2/4)/2 = .75 (identical gallery item is NOT excluded across sets)
    metrics = retrieval_metrics(forget, forget_labels, RETAIN, RETAIN_LABELS, ks=(1, 2))
    assert metrics["R@1"] == pytest.approx(100.0 / 3)
    assert metrics["R@2"] == 100.0
    assert metrics["mAP"] == pytest.approx(100.0 * (0.5 + 0.5 + 0.75) / 3)


def test_retrieval_self_index_and_chunking_and_missing_class():
    subset = retrieval_metrics(RETAIN[[0, 2]], RETAIN_LABELS[[0, 2]], RETAIN, RETAIN_LABELS,
                               ks=(1, 2), self_index=torch.tensor([0, 2]), chunk_size=1)
    assert subset == pytest.approx({"R@1": 0.0, "R@2": 50.0, "mAP": 100.0 * (1 / 2 + 1 / 3) / 2})
    absent = retrieval_metrics(torch.tensor([[1.0, 0.0]]), torch.tensor([7]), RETAIN, RETAIN_LABELS)
    assert absent == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "mAP": 0.0}


def test_retrieval_map_matches_sklearn_on_random_data():
    from sklearn.metrics import average_precision_score

    generator = torch.Generator().manual_seed(0)
    queries, gallery = torch.randn(30, 5, generator=generator), torch.randn(80, 5, generator=generator)
    query_labels = torch.randint(0, 3, (30,), generator=generator)
    gallery_labels = torch.randint(0, 3, (80,), generator=generator)
    metrics = retrieval_metrics(queries, query_labels, gallery, gallery_labels, chunk_size=7)
    similarity = (nn.functional.normalize(queries, dim=1) @ nn.functional.normalize(gallery, dim=1).T).numpy()
    relevant = (gallery_labels[None, :] == query_labels[:, None]).numpy()
    expected = np.mean([average_precision_score(relevant[i], similarity[i]) for i in range(30)])
    assert metrics["mAP"] == pytest.approx(100.0 * expected, abs=1e-4)
    top1 = similarity.argmax(axis=1)
    assert metrics["R@1"] == pytest.approx(100.0 * np.mean(gallery_labels.numpy()[top1] == query_labels.numpy()))


def test_retrieve_excludes_self():
    scores, indices = retrieve(RETAIN, RETAIN, 2, self_index=torch.arange(4))
    assert indices.tolist() == [[1, 2], [2, 0], [1, 3], [2, 1]]
    assert scores[0].tolist() == pytest.approx([0.8, 0.6])
    with pytest.raises(ValueError, match="k must be"):
        retrieve(RETAIN, RETAIN, 4, self_index=torch.arange(4))


def test_retrieval_rejects_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(RETAIN, RETAIN_LABELS[:3])
    with pytest.raises(ValueError, match="dim"):
        retrieval_metrics(RETAIN, RETAIN_LABELS, torch.zeros(4, 3), RETAIN_LABELS)
    with pytest.raises(ValueError, match="gallery_labels"):
        retrieval_metrics(RETAIN, RETAIN_LABELS, RETAIN)
    with pytest.raises(ValueError, match="one item"):
        retrieval_metrics(RETAIN[:1], RETAIN_LABELS[:1])
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(RETAIN, RETAIN_LABELS, ks=(0,))


# ---- consistency -----------------------------------------------------------------------------------


def test_consistency_by_hand():
    before, after = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    result = representation_consistency(before, after, bins=4)
    assert result["mean"] == pytest.approx(0.5)  # cosines 1 and 0
    assert result["min"] == pytest.approx(0.0)
    assert result["histogram"] == {"bins": [-1.0, -0.5, 0.0, 0.5, 1.0], "counts": [0, 0, 1, 1]}
    with pytest.raises(ValueError, match="shape"):
        representation_consistency(torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="empty"):
        representation_consistency(torch.zeros(0, 2), torch.zeros(0, 2))


# ---- membership inference --------------------------------------------------------------------------


def confident_logits(labels, margin, generator, num_classes=3):
    """Logits whose label column exceeds the others by ``margin`` (+ noise): loss ~ 0 for large margins."""
    logits = torch.randn(len(labels), num_classes, generator=generator) * 0.1
    logits[torch.arange(len(labels)), labels] += margin
    return logits


def test_per_sample_loss_and_features():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(per_sample_loss(logits, labels), torch.tensor([math.log(2.0), math.log(4.0)]))
    features = mia_features(logits, labels, ("loss", "entropy", "confidence"))
    assert features.shape == (2, 3)
    assert features[0].tolist() == pytest.approx([math.log(2.0), math.log(2.0), 0.5])
    assert features[1, 2] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="subset"):
        mia_features(logits, labels, ("margin",))


def test_mia_flags_obvious_members():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (60,), generator=generator)
    members = confident_logits(labels[:30], 20.0, generator)  # near-zero loss
    nonmembers = confident_logits(labels[30:50], -5.0, generator)  # high loss
    forget_labels, holdout_labels = labels[50:55], labels[55:60]
    forget_like_members = confident_logits(forget_labels, 20.0, generator)
    holdout = confident_logits(holdout_labels, -5.0, generator)
    result = membership_inference_audit(members, labels[:30], nonmembers, labels[30:50],
                                        forget_like_members, forget_labels, holdout, holdout_labels, seed=0)
    assert result["attack_auc_cv"] == 1.0 and result["attack_accuracy_cv"] == 1.0
    assert result["forget_member_rate"] == 1.0 and result["forget_member_prob_mean"] > 0.9
    assert result["forget_auc"] == 1.0 and result["forget_accuracy"] == 1.0
    assert result["forget_auc_distance"] == 0.5 and result["forget_auc_num_values"] == 26
    assert result["forget_auc_interval_95"] == [1.0, 1.0]  # perfectly separated in every resample
    assert result["num_members"] == result["num_nonmembers"] == 20  # balanced to the smaller group
    assert result["num_forget"] == 5 and result["num_holdout"] == 5

    forgotten = confident_logits(forget_labels, -5.0, generator)  # after unlearning: high loss
    after = membership_inference_audit(members, labels[:30], nonmembers, labels[30:50], forgotten, forget_labels)
    assert after["forget_member_rate"] == 0.0
    assert "forget_auc" not in after and after["num_holdout"] == 0


def test_mia_uninformative_auc_in_range_and_deterministic():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (70,), generator=generator)
    logits = torch.randn(70, 3, generator=generator)
    args = (logits[:30], labels[:30], logits[30:60], labels[30:60], logits[60:], labels[60:])
    result = membership_inference_audit(*args, features=("loss", "entropy", "confidence"), seed=3)
    for key in ("attack_auc_cv", "attack_accuracy_cv", "attack_auc_train", "forget_member_rate"):
        assert 0.0 <= result[key] <= 1.0
    assert result == membership_inference_audit(*args, features=("loss", "entropy", "confidence"), seed=3)


def test_auc_below_chance_is_as_far_from_it_and_small_k_is_uncertain():
    from hf_structguard.evaluation.mia import bootstrap_auc_interval

    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (46,), generator=generator)
    members = confident_logits(labels[:20], 20.0, generator)
    nonmembers = confident_logits(labels[20:40], -5.0, generator)
    # over-forgotten: the 3 forgotten images have a HIGHER loss than any unseen image (AUC 0, not "better")
    forgotten = confident_logits(labels[40:43], -30.0, generator)
    holdout = confident_logits(labels[43:46], -5.0, generator)
    result = membership_inference_audit(members, labels[:20], nonmembers, labels[20:40], forgotten, labels[40:43],
                                        holdout, labels[43:46], seed=0)
    assert result["forget_auc"] == 0.0 and result["forget_auc_distance"] == 0.5
    assert result["forget_auc_num_values"] == 10  # 3 against 3: the AUC is one of 0, 1/9, ..., 1

    rng = np.random.default_rng(0)
    few = bootstrap_auc_interval(rng.normal(0, 1, 3), rng.normal(0, 1, 3), seed=0)
    many = bootstrap_auc_interval(rng.normal(0, 1, 300), rng.normal(0, 1, 300), seed=0)
    assert few[1] - few[0] > 0.5 > 0.2 > many[1] - many[0]  # k = 3 says little; k = 300 pins it near 0.5
    assert many[0] < 0.5 < many[1]
    assert bootstrap_auc_interval([2.0, 3.0], [0.0, 1.0]) == (1.0, 1.0)


def test_mia_rejects_bad_inputs():
    logits, labels = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="empty"):
        membership_inference_audit(logits, labels, logits, labels, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        membership_inference_audit(logits, labels[:3], logits, labels, logits, labels)
    with pytest.raises(ValueError, match=">= 2"):
        membership_inference_audit(logits[:1], labels[:1], logits, labels, logits, labels)
    with pytest.raises(ValueError, match="both"):
        membership_inference_audit(logits, labels, logits, labels, logits, labels, holdout_logits=logits)
    broken = logits.clone()
    broken[1, 2] = float("nan")  # a diverged model: a clear error, not sklearn's "Input X contains NaN"
    with pytest.raises(ValueError, match="logits are not all finite"):
        membership_inference_audit(logits, labels, logits, labels, broken, labels)


# ---- evaluate_model --------------------------------------------------------------------------------


def test_eval_sets_subsample_is_seeded_nested_and_validated():
    sets = make_sets(retain_subsample=10, seed=5)
    first = sets.retain_indices()
    assert len(first) == 10 and np.array_equal(first, make_sets(retain_subsample=10, seed=5).retain_indices())
    assert set(make_sets(retain_subsample=4, seed=5).retain_indices()) <= set(first)
    assert not np.array_equal(first, make_sets(retain_subsample=10, seed=6).retain_indices())
    assert len(make_sets(retain_subsample=None).retain_indices()) == 40
    holdout, nonmembers = sets.mia_split()
    assert len(holdout) == 4 and len(nonmembers) == 16 and not set(holdout) & set(nonmembers)
    with pytest.raises(ValueError, match="empty"):
        make_sets(num_forget=0)
    with pytest.raises(ValueError, match="labels"):
        bad_test = (torch.rand(3, 3, 4, 4), torch.zeros(2, dtype=torch.long))
        EvalSets(test=bad_test, retain=sets.retain, forget=sets.forget)
    with pytest.raises(ValueError, match="retain_subsample"):
        make_sets(retain_subsample=0)


def test_evaluate_model_end_to_end():
    torch.manual_seed(0)
    model = TinyModel().train()
    sets = make_sets(retain_subsample=12)
    result = evaluate_model(model, sets, reference_model=copy.deepcopy(model))
    assert model.training  # mode restored
    subset = torch.as_tensor(sets.retain_indices())
    logits, _ = predict(model, sets.retain[0][subset])
    assert result["A_r"] == accuracy(logits, sets.retain[1][subset])
    assert result["A_test"] == accuracy(predict(model, sets.test[0])[0], sets.test[1])
    assert result["A_f"] == accuracy(predict(model, sets.forget[0])[0], sets.forget[1])
    assert result["sizes"] == {"test": 20, "retain": 12, "retain_total": 40, "forget": 4, "mia_holdout": 4}
    assert set(result["retrieval"]) == {"retain", "forget"}
    assert set(result["retrieval"]["forget"]) == {"R@1", "R@5", "R@10", "mAP"}
    assert result["consistency"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert sum(result["consistency"]["histogram"]["counts"]) == 12
    assert 0.0 <= result["mia"]["attack_auc_cv"] <= 1.0 and "forget_auc" in result["mia"]
    assert result["seconds"] >= 0.0 and result["eval_seed"] == 0

    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in perturbed.backbone.parameters():
            parameter.add_(torch.randn_like(parameter))
    moved = evaluate_model(perturbed, sets, reference_model=model, retrieval=False, mia=False)
    assert moved["consistency"]["mean"] < 0.99
    assert "retrieval" not in moved and "mia" not in moved and "mia_holdout" not in moved["sizes"]
    with pytest.raises(ValueError, match="mia_features"):
        evaluate_model(model, sets, mia_features=("margin",))


def test_evaluate_model_with_explicit_holdout():
    model = TinyModel()
    sets = make_sets()
    sets.mia_holdout_test = (torch.rand(6, 3, 4, 4), torch.randint(0, 3, (6,)))
    result = evaluate_model(model, sets, retrieval=False)
    assert result["mia"]["num_holdout"] == 6 and result["mia"]["num_nonmembers"] == 20


def test_evaluate_model_with_real_structguard_model():
    modeling = pytest.importorskip("hf_structguard.modeling")
    model = modeling.build_model("test_resnet", num_labels=3, image_size=16, pretrained=False)
    sets = make_sets(num_retain=12, num_test=8, num_forget=2, image_size=16)
    result = evaluate_model(model, sets, reference_model=model, batch_size=8)
    assert 0.0 <= result["A_test"] <= 100.0
    assert result["consistency"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert result["sizes"]["retain"] == 12


# ---- evaluate metric modules -----------------------------------------------------------------------


def test_metric_modules_load_offline_and_match(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    accuracy_metric = load_metric("unlearning_accuracy")
    assert accuracy_metric.compute(predictions=[0, 1, 0, 2], references=[0, 1, 2, 2]) == {"accuracy": 75.0}
    retrieval_metric = load_metric("retrieval")
    retain = retrieval_metric.compute(predictions=RETAIN.tolist(), references=RETAIN_LABELS.tolist(), ks=[1, 2])
    assert retain == pytest.approx(retrieval_metrics(RETAIN, RETAIN_LABELS, ks=(1, 2)))
    forget = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    forget_labels = torch.tensor([1, 0, 0])
    from_metric = retrieval_metric.compute(predictions=forget.tolist(), references=forget_labels.tolist(),
                                           gallery_embeddings=RETAIN, gallery_labels=RETAIN_LABELS)
    assert from_metric == pytest.approx(retrieval_metrics(forget, forget_labels, RETAIN, RETAIN_LABELS))
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("accuracy")


# ---- results ---------------------------------------------------------------------------------------


def test_write_results_atomic_plain_numbers(tmp_path):
    path = tmp_path / "run" / "results.json"
    methods = {"before": {"A_test": np.float32(92.5), "A_r": torch.tensor(99.0), "A_f": 100.0, "seconds": 1.5,
                          "retrieval": {"retain": {"mAP": np.float64(50.0)}}, "bad": float("nan")},
               "structguard": {"A_test": 84.0, "A_r": 91.0, "A_f": 0.0, "steps": np.int64(12), "seconds": 30.25}}
    write_results(path, {"seed": 0, "k": 4}, {"k": 4, "fingerprint": "abc"}, methods)
    data = json.loads(path.read_text())
    assert data["run_config"] == {"seed": 0, "k": 4}
    assert data["forget_set"] == {"k": 4, "fingerprint": "abc"}
    before = data["methods"]["before"]
    assert before["A_test"] == 92.5 and type(before["A_r"]) is float and before["bad"] is None
    assert data["methods"]["structguard"]["steps"] == 12
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left
    with pytest.raises(ValueError, match="forget-sample ids"):
        write_results(path, {}, {"k": 2, "indices": [3, 7]}, methods)
    with pytest.raises(ValueError, match="forget-sample ids"):
        write_results(path, {"forget": {"indices": [3]}}, {"k": 1}, methods)
    with pytest.raises(TypeError, match="cannot hold"):
        write_results(path, {"model": object()}, {"k": 1}, methods)
    assert json.loads(path.read_text()) == data  # failed writes left the old file untouched

    table = format_results_table(methods).splitlines()
    assert table[0] == "| method | A_test | A_r | 100−A_f | steps | seconds |"
    assert table[2] == "| before | 92.50 | 99.00 | 0.00 | – | 1.5 |"
    assert table[3] == "| structguard | 84.00 | 91.00 | 100.00 | 12 | 30.2 |"
