"""Sequential deletion requests (scripts/sequential.py): planning, the union-forgotten check, references."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from _unlearning_helpers import tiny_model, tiny_problem

from hf_structguard.data import select_forget_set
from hf_structguard.evaluation.accuracy import predict
from hf_structguard.hub import DeletionReceipt
from hf_structguard.lora import is_adapter_folder, load_adapter
from hf_structguard.modeling import StructGuardForImageClassification
from hf_structguard.arguments import DataArguments
from hf_structguard.pipeline import load_data
from hf_structguard.sequential import SequentialArguments, plan_requests
from hf_structguard.trainer import UnlearningConfig, UnlearningTrainer, run_unlearning

from _scripts import load_script

sequential_script = load_script("scripts/sequential.py")

TINY = ["--default_backbone", "resnet10t", "--default_epochs", "2", "--probes_per_image", "4", "--probe_num_steps",
        "5", "--num_train_epochs", "10", "--retain_eval_size", "300",
        "--disable_tqdm", "true", "--mia", "false", "--plots", "false"]


def _union_ids(output_dir: Path) -> list[int]:
    return json.loads((output_dir / "forget_set.json").read_text())["indices"]


def _forget_accuracy(model, ids: list[int]) -> float:
    images, labels = load_data(DataArguments()).tensors("train", ids, model.config.image_size)
    return 100.0 * (predict(model, images)[0].argmax(1) == labels).double().mean().item()


@pytest.fixture(scope="module")
def three_requests(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("sequential") / "out"
    results = sequential_script.main([*TINY, "--num_requests", "3", "--request_k", "4", "--method", "l2ul",
                                      "--learning_rate", "0.01", "--output_dir", str(output_dir)])
    return output_dir, results


def test_forgotten_instances_stay_forgotten_after_every_request(three_requests):
    output_dir, results = three_requests
    final = results["methods"]["l2ul"]
    assert [r["request"] for r in final["requests"]] == [1, 2, 3]
    for number, request in enumerate(final["requests"], start=1):
        assert request["stopped_at_zero"] and request["k"] == 4 and request["k_union"] == 4 * number
        assert request["A_f_union"] == request["A_f"] == 0.0 and request["A_f_requests"] == [0.0] * number
        assert request["sizes"]["forget"] == 4 * number and request["sizes"]["retain_total"] == 1437 - 12
        # the importance budget (≈|D_r|) counts only the requests made so far, not the ones still to come
        assert request["importance_num_samples"] == 1437 - 4 * number
    assert final["A_f"] == 0.0 and final["steps"] == sum(r["steps"] for r in final["requests"])
    # the saved final model agrees: every one of the 12 forgotten rows is misclassified
    model = StructGuardForImageClassification.from_pretrained(output_dir / "l2ul")
    assert _forget_accuracy(model, _union_ids(output_dir)) == 0.0


def test_requests_are_one_seeded_permutation_and_the_receipt_covers_their_union(three_requests):
    output_dir, results = three_requests
    union = _union_ids(output_dir)
    requests = json.loads((output_dir / "forget_set_requests.json").read_text())
    assert [i for r in requests for i in r] == union == select_forget_set(1437, k=12, seed=0).indices
    assert results["forget_set"]["k"] == 12 and [r["k"] for r in results["forget_set"]["requests"]] == [4, 4, 4]
    salt = (output_dir / "deletion_salt.txt").read_text().strip()
    receipt = DeletionReceipt.load(output_dir / "l2ul" / "deletion_receipt.json")
    assert receipt.k == 12 and receipt.verify(union, salt)
    text = json.dumps(results) + (output_dir / "l2ul" / "README.md").read_text()
    assert salt not in text and str(union[:4])[1:-1] not in text
    assert results["run_config"]["sequential"]["sequential_reference"] == "original"


def test_a_lora_sequence_is_one_adapter_on_the_before_model(tmp_path):
    output_dir = tmp_path / "out"
    # 30 passes: with per-sample stopping the first request takes 11 steps, one more than 10 passes allow here
    results = sequential_script.main([*TINY, "--num_requests", "2", "--request_k", "4", "--peft", "lora",
                                      "--importance_num_samples", "64", "--lora_rank", "4", "--learning_rate", "0.05",
                                      "--num_train_epochs", "30", "--output_dir", str(output_dir)])
    requests = results["methods"]["structguard"]["requests"]
    assert [r["A_f_union"] for r in requests] == [0.0, 0.0]
    assert requests[0]["trainable_parameters"] == requests[1]["trainable_parameters"]  # the same adapter
    assert is_adapter_folder(output_dir / "structguard")
    model = load_adapter(output_dir / "structguard", output_dir / "before")
    assert _forget_accuracy(model, _union_ids(output_dir)) == 0.0


@pytest.mark.parametrize("reference", ["original", "previous"])
def test_reference_model_defines_what_is_preserved(tmp_path, reference):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    before = tiny_model()
    start, _ = run_unlearning(copy.deepcopy(before), "structguard", forget_images[:3], forget_labels[:3], probes,
                              anchors=anchors, output_dir=str(tmp_path), num_train_epochs=1, drift_num_probes=0,
                              importance_num_samples=64, learning_rate=0.05, disable_tqdm=True)
    args = UnlearningConfig(output_dir=str(tmp_path), drift_num_probes=0)
    trainer = UnlearningTrainer(start, args, forget_images[3:], forget_labels[3:], probes, anchors=anchors,
                                reference_model=before if reference == "original" else None)
    expected = before if reference == "original" else start
    for name, psi in trainer.method.reference.items():
        assert torch.equal(psi, expected.get_parameter(name)), name
    assert trainer.original_model is not expected and trainer.model.projector is start.projector


def test_plan_requests_from_files_and_overlaps(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2, 3]")
    (tmp_path / "b.txt").write_text("4\n5\n")
    (tmp_path / "c.json").write_text("[5, 6]")
    files = SequentialArguments(forget_ids_files=[str(tmp_path / "a.json"), str(tmp_path / "b.txt")])
    assert [r.indices for r in plan_requests(100, files)] == [[1, 2, 3], [4, 5]]
    overlapping = SequentialArguments(forget_ids_files=[str(tmp_path / n) for n in ("a.json", "b.txt", "c.json")])
    with pytest.raises(ValueError, match=r"overlap: .*c.json \(request 3\) repeats 1 id\(s\) of request 2"):
        plan_requests(100, overlapping)
    with pytest.raises(ValueError, match="outside the train split"):
        plan_requests(4, files)
    with pytest.raises(ValueError, match="need 40 rows"):
        plan_requests(30, SequentialArguments(num_requests=4, request_k=10))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, "exactly one of the two"),
        ({"num_requests": 2}, "must both be >= 1"),
        ({"num_requests": 0, "request_k": 4}, "must both be >= 1"),
        ({"num_requests": 2, "request_k": 4, "forget_ids_files": ["a.json"]}, "exactly one of the two"),
        ({"num_requests": 2, "request_k": 4, "sequential_reference": "latest"}, "sequential_reference must be"),
    ],
)
def test_bad_sequence_arguments_fail_clearly(arguments, message):
    with pytest.raises(ValueError, match=message):
        SequentialArguments(**arguments)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--methods", "structguard", "l2ul"], "runs one method"),
        (["--forget_ids_file", "x.json"], "not --forget_ids_file"),
        (["--peft", "lora", "--push_to_hub", "true", "--hub_model_id", "u/x"], "base model must be on the Hub"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        sequential_script.main([*TINY, "--num_requests", "2", "--request_k", "2", "--output_dir", str(tmp_path / "x"),
                                *bad])
    assert not (tmp_path / "x").exists()
