"""scripts/pretrain.py on the embedded digits data, tiny: trains, saves and reloads a Before model."""

from __future__ import annotations

import hashlib
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
    assert 0.0 <= metrics["test_accuracy"] <= 100.0 and 0.0 <= metrics["train_accuracy"] <= 100.0
    assert metrics["recipe"]["cifar_stem"] is True and metrics["recipe"]["backbone"] == "resnet10t"
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and saved["train_accuracy"] == metrics["train_accuracy"]
    model = StructGuardForImageClassification.from_pretrained(out)
    assert model.config.image_size == 16
    logits = model(torch.rand(2, 3, 16, 16)).logits
    assert logits.shape == (2, 10)


def test_pretrain_takes_the_image_size_from_the_data_and_shows_progress(tmp_path, capsys):
    out = tmp_path / "native"
    metrics = _script().main([
        "--output_dir", str(out), "--backbone", "resnet10t", "--cifar_stem", "true", "--epochs", "1",
        "--batch_size", "256", "--hflip", "false", "--crop_padding", "0",
    ])
    assert metrics["recipe"]["image_size"] == 8  # the digits images are 8 x 8, not the old default 32
    assert StructGuardForImageClassification.from_pretrained(out).config.image_size == 8
    captured = capsys.readouterr()
    assert "<" in captured.err and "it/s" in captured.err  # tqdm's bar: elapsed<remaining, rate
    printed = json.loads(captured.out.strip().splitlines()[-1])
    assert set(printed) == {"train_accuracy", "test_accuracy", "image_size", "output_dir"}


def test_pretrain_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    from hf_structguard.errors import EXIT_USER_ERROR, run_cli

    for bad, message in ((["--backbone", "no_such_net"], "--backbone no_such_net: not a timm architecture"),
                         (["--epochs", "0"], "epochs, learning_rate and batch_size must be positive")):
        assert run_cli(_script().main, ["--output_dir", str(tmp_path / "never"), *bad]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
        assert not (tmp_path / "never").exists()


def _weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_single_thread_training_is_bit_identical_on_one_and_two_threads(tmp_path):
    """The embedded default's Before model must not depend on the machine's thread count (without
    ``single_thread`` the two hashes differ on a multi-threaded torch build)."""
    from hf_structguard.data import load_image_data
    from hf_structguard.pretrain import PretrainArguments, pretrain_classifier

    data = load_image_data(None)
    recipe = PretrainArguments(backbone="resnet10t", image_size=16, epochs=0.15, batch_size=64, learning_rate=0.05,
                               hflip=False, crop_padding=2, progress_bar=False, single_thread=True)
    previous = torch.get_num_threads()
    hashes = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model, _ = pretrain_classifier(data, recipe, tmp_path / str(threads))
            hashes.append(_weights_sha256(model))
            assert torch.get_num_threads() == threads  # restored after training
    finally:
        torch.set_num_threads(previous)
    assert hashes[0] == hashes[1]
