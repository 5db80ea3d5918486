"""The method registry is the one place a method's facts live: adding a method is one module (here: one class
in the test) that validates its options, describes itself on model cards and offers its benchmark rows."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch.nn.functional as F

from hf_structguard.data import ForgetSet
from hf_structguard.hub import make_receipt, render_model_card
from hf_structguard.methods import METHOD_REGISTRY, UnlearningMethod, benchmark_rows, get_method, register_method
from hf_structguard.trainer import UnlearningConfig

from _scripts import load_script

TOY_DESCRIPTION = "Toy: cross-entropy towards the probes' targets, for the registry test only."


@pytest.fixture
def toy_method():
    """A method defined and registered here, removed from the registry afterwards."""

    @register_method("toy")
    class Toy(UnlearningMethod):
        description = TOY_DESCRIPTION
        needs_retain = True
        defaults = {"learning_rate": 0.02}
        presets = {"default": {"momentum": 0.0}, "fast": {"momentum": 0.5, "learning_rate": 0.1}}

        @classmethod
        def check_config(cls, config):
            if config.learning_rate > 1:
                raise ValueError(f"toy needs learning_rate <= 1, got {config.learning_rate}")

        def compute_loss(self, model, probe_batch, forget_batch, step):
            loss = F.cross_entropy(model(probe_batch["pixel_values"]).logits, probe_batch["labels"])
            return {"loss": loss}

    yield Toy
    del METHOD_REGISTRY["toy"]


def test_a_toy_method_validates_its_options_and_applies_its_presets(tmp_path, toy_method):
    assert get_method("toy") is toy_method
    config = UnlearningConfig(output_dir=str(tmp_path), method="toy")
    assert config.learning_rate == 0.02 and config.momentum == 0.0
    fast = UnlearningConfig(output_dir=str(tmp_path), method="toy", preset="fast")
    assert fast.learning_rate == 0.1 and fast.momentum == 0.5  # a preset refines the method's defaults
    with pytest.raises(ValueError, match="toy needs learning_rate <= 1, got 2"):
        UnlearningConfig(output_dir=str(tmp_path), method="toy", learning_rate=2.0)
    with pytest.raises(ValueError, match="unknown preset 'slow' for toy"):
        UnlearningConfig(output_dir=str(tmp_path), method="toy", preset="slow")


def test_a_toy_method_is_described_on_its_model_card(toy_method):
    receipt = make_receipt(ForgetSet(indices=[3, 5], mode="random"), salt="s" * 32, date="2026-01-01")
    methods = {"before": {"A_test": 90.0, "A_r": 95.0, "A_f": 100.0}, "toy": {"A_test": 88.0, "A_r": 93.0, "A_f": 0.0}}
    card = str(render_model_card("toy", methods, {}, receipt))
    assert TOY_DESCRIPTION in card
    assert "This reference method used the retain set" in card  # needs_retain: not called retain-free
    structguard = str(render_model_card("structguard", {**methods, "structguard": methods["toy"]}, {}, receipt))
    assert get_method("structguard").description in structguard
    assert "(retain-free)" in structguard and "used the retain set" not in structguard


def test_a_toy_method_is_offered_as_benchmark_rows(toy_method):
    rows = benchmark_rows()
    assert rows["toy"] == ("toy", {}) and rows["toy[fast]"] == ("toy", {"preset": "fast"})
    assert "toy[default]" not in rows
    assert rows["structguard[reference]"] == ("structguard", {"preset": "reference"})
    for method, changes in rows.values():  # every row is a valid config
        UnlearningConfig(output_dir="unused", method=method, **changes)
    load_script("benchmarks/run_benchmark.py")  # puts benchmarks/ on the path, as `python` does
    benchmark = importlib.import_module("_rows")  # the benchmark reads its rows from the registry
    assert benchmark.select_rows(["toy", "toy[fast]"]) == ["toy", "toy[fast]"]


def test_registering_needs_a_description_and_a_default_preset():
    with pytest.raises(TypeError, match="needs a description"):
        register_method("undescribed")(type("Undescribed", (UnlearningMethod,), {}))
    with pytest.raises(TypeError, match="lack 'default'"):
        register_method("no_default")(type("NoDefault", (UnlearningMethod,), {"description": "x", "presets": {"a": {}}}))
    assert "undescribed" not in METHOD_REGISTRY and "no_default" not in METHOD_REGISTRY


def test_structguard_preset_still_works_with_a_future_warning(tmp_path):
    with pytest.warns(FutureWarning, match="use preset"):
        config = UnlearningConfig(output_dir=str(tmp_path), method="structguard", structguard_preset="reference")
    assert config.preset == "reference" and config.projector_init == "fresh"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.for_method("structguard", seed=1)  # the copy does not warn again


def test_every_module_of_the_methods_package_is_registered_without_a_list_to_edit():
    import pkgutil

    from hf_structguard import methods

    modules = {module.name for module in pkgutil.iter_modules(methods.__path__)} - {"base"}
    assert modules <= set(METHOD_REGISTRY)  # each built-in module registers the method it is named after
