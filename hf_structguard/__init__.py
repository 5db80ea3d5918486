"""hf-structguard: structure-faithful instance unlearning for timm image classifiers.

The public API, importable from the top level (``from hf_structguard import UnlearningConfig, run_unlearning``).
Names are loaded on first use, so ``import hf_structguard`` stays light (no torch or transformers yet).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_PUBLIC = {
    # unlearning: config, trainer, one-call entry
    "UnlearningConfig": "trainer",
    "UnlearningTrainer": "trainer",
    "UnlearningResult": "trainer",
    "run_unlearning": "trainer",
    # methods and their registry
    "METHOD_REGISTRY": "methods",
    "UnlearningMethod": "methods",
    "StructGuard": "methods",
    "benchmark_rows": "methods",
    "get_method": "methods",
    "register_method": "methods",
    # end-to-end runs (scripts/run.py, scripts/pretrain.py, scripts/sequential.py)
    "AnchorArguments": "arguments",
    "DataArguments": "arguments",
    "ModelArguments": "arguments",
    "RunArguments": "arguments",
    "run_pipeline": "pipeline",
    "publish_run": "pipeline",
    "PretrainArguments": "pretrain",
    "pretrain_classifier": "pretrain",
    "SequentialArguments": "arguments",
    "run_sequential": "sequential",
    # data, forget sets, models, probes, anchors
    "ForgetSet": "data",
    "ImageClassificationData": "data",
    "load_image_data": "data",
    "select_forget_set": "data",
    "StructGuardConfig": "modeling",
    "StructGuardForImageClassification": "modeling",
    "build_model": "modeling",
    "load_adapter": "lora",
    "save_model": "lora",
    "ProbeSet": "probes",
    "generate_probes": "probes",
    "AnchorSet": "anchors",
    "build_anchor_set": "anchors",
    "load_attributes": "anchors",
    # evaluation
    "EvalSets": "evaluation",
    "evaluate_model": "evaluation",
    # Hub: model cards, receipts, pushing
    "DeletionReceipt": "hub",
    "push_run": "hub",
    "render_model_card": "hub",
    "write_model_card": "hub",
    # errors
    "UserInputError": "errors",
}

__all__ = ["__version__", *_PUBLIC]

def __getattr__(name: str):
    """Import a public name's submodule on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
