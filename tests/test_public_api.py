"""The public API is importable from the top level, names the same objects as the submodules, and
``import hf_structguard`` alone stays light (names load on first use)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import hf_structguard


def test_every_public_name_resolves_to_its_submodule_object():
    assert len(hf_structguard.__all__) == len(set(hf_structguard.__all__))
    for name in hf_structguard.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(f"hf_structguard.{hf_structguard._PUBLIC[name]}")
        assert getattr(hf_structguard, name) is getattr(module, name), name
    assert set(hf_structguard.__all__) <= set(dir(hf_structguard))


def test_the_main_names_import_from_the_top_level():
    from hf_structguard import UnlearningConfig, UnlearningTrainer, get_method, run_pipeline, run_unlearning
    from hf_structguard.pipeline import run_pipeline as pipeline_entry
    from hf_structguard.trainer import UnlearningConfig as config_class

    assert UnlearningConfig is config_class and run_pipeline is pipeline_entry
    assert issubclass(UnlearningTrainer, __import__("transformers").Trainer) and callable(run_unlearning)
    assert get_method("structguard") is hf_structguard.StructGuard


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        hf_structguard.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from hf_structguard import no_such_name")


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, hf_structguard; heavy = {'torch', 'transformers', 'timm', 'datasets'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
