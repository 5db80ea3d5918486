"""scripts/pretrain.py on the embedded digits data, tiny: trains, saves and reloads a Before model."""

from __future__ import annotations

import json

import torch

from hf_structguard.modeling import StructGuardForImageClassification

from _scripts import load_script


def _script():
    return load_script("scripts/pretrain.py")


def test_pretrain_script_on_digits_with_cifar_stem(tmp_path):
    out = tmp_path / "before"
    metrics = _script().main([
        "--output_dir", str(out), "--backbone", "resnet10t", "--cifar_stem", "true", "--image_size", "16",
        "--epochs", "1", "--batch_size", "64", "--learning_rate", "0.05", "--hflip", "false", "--crop_padding", "2",
    ])
    assert 0.0 <= metrics["test_accuracy"] <= 100.0
    assert metrics["recipe"]["cifar_stem"] is True and metrics["recipe"]["backbone"] == "resnet10t"
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    model = StructGuardForImageClassification.from_pretrained(out)
    assert model.config.image_size == 16
    logits = model(torch.rand(2, 3, 16, 16)).logits
    assert logits.shape == (2, 10)
