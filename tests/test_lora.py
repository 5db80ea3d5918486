"""LoRA unlearning (--peft lora): exact base + adapter reproduction, merging, every method, Hub push/load."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from _unlearning_helpers import tiny_model, tiny_problem
from huggingface_hub import HfApi, ModelCard

from hf_structguard.data import ForgetSet
from hf_structguard.evaluation import write_results
from hf_structguard.evaluation.accuracy import accuracy, predict
from hf_structguard.hub import DeletionReceipt, push_run, write_model_card
from hf_structguard.lora import (
    effective_parameters,
    is_adapter_folder,
    is_peft_model,
    load_adapter,
    plain_copy,
    save_model,
)
from hf_structguard.modeling import StructGuardForImageClassification
from hf_structguard.arguments import DataArguments
from hf_structguard.pipeline import load_data
from hf_structguard.trainer import UnlearningConfig, UnlearningTrainer, run_unlearning

from _scripts import load_script

run_script = load_script("scripts/run.py")

FAST = {"num_train_epochs": 3, "importance_num_samples": 64, "drift_num_probes": 16, "disable_tqdm": True,
        "logging_steps": 100, "lora_rank": 4}


def _images(n=6, seed=3):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x).logits


def _running_means(model):
    return {name: buf.clone() for name, buf in model.named_buffers() if name.endswith("running_mean")}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny Before model (saved) and its structguard LoRA unlearning."""
    folder = tmp_path_factory.mktemp("lora")
    forget_images, forget_labels, probes, anchors = tiny_problem()
    before = tiny_model()
    before.save_pretrained(folder / "before")
    model, info = run_unlearning(copy.deepcopy(before), "structguard", forget_images, forget_labels, probes,
                                 anchors=anchors, output_dir=str(folder / "out"), peft="lora", learning_rate=0.05,
                                 batchnorm="joint", **FAST)  # train-mode BatchNorm: statistics move with the adapter
    return folder, before, model, info


def test_base_plus_adapter_reproduces_the_unlearned_model_exactly(lora_run):
    folder, before, model, info = lora_run
    assert is_peft_model(model) and info["steps"] >= 2
    full = sum(p.numel() for p in plain_copy(model).parameters())
    assert 0 < info["trainable_parameters"] < full / 2
    for name, module in model.get_base_model().named_modules():  # the base model's own weights never moved
        if hasattr(module, "base_layer"):
            assert torch.equal(module.base_layer.weight, before.get_submodule(name).weight), name
        if hasattr(module, "original_module") and name.startswith("backbone."):
            assert torch.equal(module.original_module.running_mean, before.get_submodule(name).running_mean), name
    # BatchNorm statistics moved during unlearning (train mode): without saving them, base + adapter would differ
    unlearned = plain_copy(model)
    moved = [name for name, value in _running_means(before).items()
             if not torch.equal(unlearned.get_buffer(name), value)]
    assert any(name.startswith("backbone.") for name in moved)

    save_model(model, folder / "adapter")
    assert is_adapter_folder(folder / "adapter") and not (folder / "adapter" / "README.md").exists()
    loaded = load_adapter(folder / "adapter", folder / "before")
    x = _images()
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    for name, value in _running_means(model).items():
        assert torch.equal(loaded.get_buffer(name), value), name

    merged = load_adapter(folder / "adapter", folder / "before").merge_and_unload()
    assert type(merged) is StructGuardForImageClassification and merged.projector is not None
    torch.testing.assert_close(_logits(merged, x), _logits(model, x), atol=1e-5, rtol=1e-5)
    assert torch.equal(_logits(merged, x).argmax(1), _logits(model, x).argmax(1))
    merged.save_pretrained(folder / "merged")  # a plain model folder again
    reloaded = StructGuardForImageClassification.from_pretrained(folder / "merged")
    assert torch.equal(_logits(reloaded, x), _logits(merged, x))


def test_effective_parameters_are_the_merged_weights_under_plain_names(lora_run):
    _, before, model, _ = lora_run
    effective = dict(effective_parameters(model))
    plain = dict(plain_copy(model).named_parameters())
    assert set(effective) == set(plain)
    assert {name for name in plain if not name.startswith("projector.")} == {n for n, _ in before.named_parameters()}
    for name, value in effective.items():
        torch.testing.assert_close(value, plain[name], atol=1e-6, rtol=0)
    assert effective["backbone.layer1.0.conv1.weight"].requires_grad  # differentiable w.r.t. the LoRA factors
    assert set(dict(effective_parameters(model, "backbone"))) == {n for n, _ in before.backbone_parameters()}


@pytest.mark.parametrize("method", ["neggrad", "adv", "l2ul", "rawp", "oracle"])
def test_every_training_method_trains_an_adapter(method, tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    before = tiny_model()
    retain = (_images(20), torch.arange(20) % 4) if method == "oracle" else None
    model, info = run_unlearning(copy.deepcopy(before), method, forget_images, forget_labels, probes,
                                 retain_dataset=retain, output_dir=str(tmp_path), peft="lora", learning_rate=0.05,
                                 **FAST)
    assert is_peft_model(model) and info["steps"] >= 1
    x = _images()
    assert not torch.equal(_logits(model, x), _logits(before, x))  # the adapter learned something
    save_model(model, tmp_path / "adapter")
    assert torch.equal(_logits(load_adapter(tmp_path / "adapter", before), x), _logits(model, x))


def test_lora_target_modules_select_layers(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    args = UnlearningConfig(output_dir=str(tmp_path), method="neggrad", peft="lora", lora_target_modules=["layer4"],
                            **FAST)
    trainer = UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes)
    targets = trainer.model.peft_config["default"].target_modules
    assert targets and all(name.startswith("backbone.layer4.") for name in targets)
    with pytest.raises(ValueError, match="matches no Conv2d/Linear"):
        UnlearningTrainer(tiny_model(), args.for_method("neggrad", lora_target_modules=["nope"]), forget_images,
                          forget_labels, probes)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"peft": "qlora"}, "unknown peft type 'qlora'"),
        ({"peft": "lora", "lora_rank": 0}, "lora_rank must be >= 1"),
        ({"peft": "lora", "lora_alpha": -1.0}, "lora_alpha must be > 0"),
        ({"peft": "lora", "method": "fisher"}, "fisher adds full-rank noise"),
    ],
)
def test_bad_peft_settings_fail_clearly(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        UnlearningConfig(output_dir=str(tmp_path), **changes)


def test_adapter_push_and_load_by_repo_id(local_hub, lora_run, tmp_path):
    folder, before, model, info = lora_run
    HfApi().create_repo("test-user/before")
    HfApi().upload_folder(folder_path=folder / "before", repo_id="test-user/before")

    output_dir = tmp_path / "run"
    output_dir.mkdir()
    ForgetSet(indices=[11, 22, 33, 44, 55, 66], mode="ids").to_json(output_dir / "forget_set.json")
    save_model(model, output_dir / "structguard")
    run_config = {"model": {"model_name_or_path": None}, "unlearning": {"structguard": info["config"]}}
    metrics = {"A_test": 81.0, "A_r": 90.0, "A_f": 0.0, "steps": info["steps"], "stopped_at_zero": True}
    write_results(output_dir / "results.json", run_config, {"k": 6},
                  {"before": {"A_test": 90.0, "A_r": 99.0, "A_f": 100.0}, "structguard": metrics})
    with pytest.raises(ValueError, match="base model must be on the Hub"):
        push_run(output_dir, "structguard", "test-user/sg-lora", endpoint=local_hub.endpoint)

    push_run(output_dir, "structguard", "test-user/sg-lora", endpoint=local_hub.endpoint,
             base_model="test-user/before")
    assert local_hub.list_files("test-user/sg-lora") == [
        ".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors", "deletion_receipt.json",
        "preprocessor_config.json", "unlearned_config.json"]
    x = _images()
    loaded = load_adapter("test-user/sg-lora")  # the base model comes from adapter_config.json, by repo id
    assert torch.equal(_logits(loaded, x), _logits(model, x))

    card = ModelCard.load("test-user/sg-lora")
    metadata = yaml.safe_load(card.content.split("---")[1])
    assert metadata["base_model"] == "test-user/before" and metadata["library_name"] == "peft"
    assert {"lora", "peft"} <= set(metadata["tags"])
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values["A_test"] == 81.0 and values["A_test (Before)"] == 90.0 and values["100 − A_f"] == 100.0
    receipt = DeletionReceipt.load(output_dir / "structguard" / "deletion_receipt.json")
    salt = (output_dir / "deletion_salt.txt").read_text().strip()
    assert receipt.k == 6 and receipt.verify([11, 22, 33, 44, 55, 66], salt) and receipt.fingerprint in card.content
    assert 'load_adapter("test-user/sg-lora")' in card.content and "BatchNorm layers" in card.content
    for blob in local_hub.stored_bytes():
        assert salt.encode() not in blob and str(folder).encode() not in blob  # no salt, no local base path


def test_adapter_card_without_hub_base(lora_run, tmp_path):
    _, _, model, info = lora_run
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    ForgetSet(indices=[1, 2, 3], mode="ids").to_json(output_dir / "forget_set.json")
    save_model(model, output_dir / "neggrad")
    results = {"before": {"A_test": 90.0}, "neggrad": {"A_test": 80.0, "A_f": 0.0}}
    text = write_model_card(output_dir, "neggrad", results, {"model": {}}).read_text()
    assert "LoRA adapter (peft):** rank 4" in text and 'base_model="<the base model>"' in text


def test_pipeline_runs_lora_and_the_adapter_reproduces_its_numbers(tmp_path):
    tiny = ["--default_backbone", "resnet10t", "--default_epochs", "2", "--forget_k", "4", "--probes_per_image", "4",
            "--probe_num_steps", "5", "--importance_num_samples", "64", "--num_train_epochs", "3",
            "--retain_eval_size", "300", "--disable_tqdm", "true", "--mia", "false", "--plots", "false"]
    with pytest.raises(ValueError, match="base model must be on the Hub"):
        run_script.main([*tiny, "--output_dir", str(tmp_path / "never"), "--peft", "lora", "--push_to_hub", "true",
                         "--hub_model_id", "test-user/x"])
    assert not (tmp_path / "never").exists()

    output_dir = tmp_path / "out"
    results = run_script.main([*tiny, "--output_dir", str(output_dir), "--peft", "lora", "--lora_rank", "4"])
    metrics = results["methods"]["structguard"]
    assert metrics["trainable_parameters"] > 0 and is_adapter_folder(output_dir / "structguard")
    assert "LoRA adapter (peft)" in (output_dir / "structguard" / "README.md").read_text()
    model = load_adapter(output_dir / "structguard", output_dir / "before")
    data = load_data(DataArguments())
    test_images, test_labels = data.tensors("test", None, 16)
    assert accuracy(predict(model, test_images)[0], test_labels) == metrics["A_test"]
    ids = json.loads((output_dir / "forget_set.json").read_text())["indices"]
    forget_images, forget_labels = data.tensors("train", ids, 16)
    assert accuracy(predict(model, forget_images)[0], forget_labels) == metrics["A_f"]
