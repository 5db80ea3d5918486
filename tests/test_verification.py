"""Verification against retraining: retrained references (never see a forget image, cached), relearn time, the
retrain-calibrated stopping target, and scripts/verify.py end to end on the embedded digits default, tiny."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers.trainer_utils import SaveStrategy

from hf_structguard import verification
from hf_structguard.data import load_image_data, select_forget_set
from hf_structguard.pretrain import PretrainArguments
from hf_structguard.trainer import ForgetAccuracyStopping, UnlearningConfig, UnlearningTrainer
from hf_structguard.trainer.callbacks import forget_accuracy_level

from _scripts import load_script
from _unlearning_helpers import tiny_model, tiny_problem

TINY_RECIPE = PretrainArguments(backbone="resnet10t", image_size=8, epochs=0.2, batch_size=256, hflip=False,
                                crop_padding=0, progress_bar=False)


@pytest.fixture(scope="module")
def digits():
    return load_image_data(None)


def test_retrained_reference_never_sees_a_forget_image_and_is_cached(digits, tmp_path, monkeypatch):
    forget = select_forget_set(len(digits.train), k=4, seed=0)
    trained_on = []
    real = verification.pretrain_classifier

    def spy(data, args, output_dir):
        trained_on.append(data)
        return real(data, args, output_dir)

    monkeypatch.setattr(verification, "pretrain_classifier", spy)
    first = verification.retrained_reference(digits, forget, TINY_RECIPE, seed=1, cache_dir=tmp_path)
    assert len(trained_on) == 1 and len(trained_on[0].train) == len(digits.train) - forget.k
    [folder] = [path for path in tmp_path.iterdir() if path.is_dir()]
    reference = json.loads((folder / verification.REFERENCE_FILE).read_text())
    rows = reference["training_rows"]
    assert reference["seed"] == 1 and not set(rows) & set(forget.indices)
    assert sorted(rows + forget.indices) == list(range(len(digits.train)))
    assert trained_on[0].labels("train").tolist() == digits.labels("train")[rows].tolist()  # the rows it says

    again = verification.retrained_reference(digits, forget, TINY_RECIPE, seed=1, cache_dir=tmp_path)
    assert len(trained_on) == 1  # read from the cache, not retrained
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    other = select_forget_set(len(digits.train), k=4, seed=1)
    keys = {verification.reference_key(digits, f, TINY_RECIPE) for f in (forget, other)}
    assert len(keys) == 2  # another forget set is another reference


def test_recipe_comes_with_the_before_model_or_must_be_given(tmp_path):
    (tmp_path / "before").mkdir()
    with pytest.raises(verification.UserInputError, match="carries no training recipe"):
        verification.recipe_file(str(tmp_path / "before"), None)
    (tmp_path / "before" / "train_result.json").write_text(json.dumps({"recipe": {"backbone": "resnet10t"}}))
    assert verification.read_recipe(verification.recipe_file(str(tmp_path / "before"), None)).backbone == "resnet10t"
    (tmp_path / "bad.json").write_text(json.dumps({"no_such_option": 1}))
    with pytest.raises(verification.UserInputError, match="expected an object of training options"):
        verification.read_recipe(tmp_path / "bad.json")


def test_relearn_time_counts_steps_until_the_target_or_reports_none():
    images, labels, _, _ = tiny_problem(k=4)
    model = tiny_model()
    assert verification.relearn_time(model, images, labels, target=0.0, steps=3, learning_rate=0.01)["steps"] == 0
    never = verification.relearn_time(model, images, labels, target=101.0, steps=3, learning_rate=0.01)
    assert never["steps"] is None and 0.0 <= never["accuracy"] <= 100.0
    reached = verification.relearn_time(model, images, labels, target=100.0, steps=200, learning_rate=0.1)
    assert reached["steps"] is not None and reached["accuracy"] == 100.0


def _step(callback):
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    state = SimpleNamespace(epoch=1.0, global_step=3)
    callback.on_step_end(SimpleNamespace(save_strategy=SaveStrategy.NO), state, control)
    return control.should_training_stop


def test_stopping_target_stops_at_or_below_its_level():
    assert not _step(ForgetAccuracyStopping(lambda: 25.0, check_from_epoch=0))  # default: only at exactly 0
    assert _step(ForgetAccuracyStopping(lambda: 25.0, check_from_epoch=0, level=25.0))
    assert not _step(ForgetAccuracyStopping(lambda: 50.0, check_from_epoch=0, level=25.0))
    assert [forget_accuracy_level(t) for t in ("zero", "retrained", "97.5")] == [0.0, None, 97.5]
    for bad in ("half", "101", "-1"):
        with pytest.raises(ValueError, match="forget_accuracy_target must be"):
            UnlearningConfig(output_dir="unused", forget_accuracy_target=bad)


def test_an_unresolved_retrained_target_is_refused_by_the_trainer(tmp_path):
    images, labels, probes, anchors = tiny_problem()
    args = UnlearningConfig(output_dir=str(tmp_path), method="neggrad", forget_accuracy_target="retrained")
    with pytest.raises(ValueError, match="needs its level estimated"):
        UnlearningTrainer(tiny_model(), args, images, labels, probes, anchors=anchors)


def test_verify_script_writes_every_figure_and_reuses_its_work(tmp_path, monkeypatch):
    script = load_script("scripts/verify.py")
    options = [
        "--output_dir", str(tmp_path / "out"), "--default_backbone", "resnet10t", "--default_epochs", "2",
        "--probes_per_image", "4", "--probe_num_steps", "5", "--num_train_epochs", "3", "--disable_tqdm", "true",
        "--methods", "neggrad", "--num_models", "2", "--relearn_steps", "5", "--forget_accuracy_target", "retrained",
        "--cache_dir", str(tmp_path / "references"),
    ]
    result = script.main(options)
    assert json.loads((tmp_path / "out" / "verification.json").read_text()) == result
    entry = result["methods"]["neggrad"]
    assert 0.0 <= entry["forgetting_quality"] <= 1.0
    product = entry["forgetting_quality"] * entry["retain_ratio"] * entry["test_ratio"]
    assert entry["final_score"] == pytest.approx(product)
    assert entry["forget_accuracy_target"] == "retrained"
    assert entry["stop_level"] == pytest.approx(result["before"]["A_test"])  # the retrained level: Before's A_test
    assert {"relearn_steps", "relearned", "relearn_accuracy"} <= set(entry) and result["retrained"]["num_models"] == 2
    assert "| neggrad | retrained (" in (tmp_path / "out" / "verification.md").read_text()

    def no_work(*args, **kwargs):
        raise AssertionError("a finished verification was recomputed")

    monkeypatch.setattr(verification, "pretrain_classifier", no_work)
    monkeypatch.setattr(verification, "run_unlearning", no_work)
    assert script.main(options)["methods"] == result["methods"]
