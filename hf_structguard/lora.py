"""LoRA unlearning with peft: train low-rank adapters on the backbone instead of all weights.

:func:`add_lora` wraps a model (after its method added a projector) in a ``peft`` LoRA model:

- LoRA factors on the backbone's ``Conv2d`` and ``Linear`` layers (or the named subset);
- ``modules_to_save`` (trained and saved in full): the classifier, the projector when the model has one, and
  every BatchNorm layer of the backbone. BatchNorm running statistics change during unlearning (train mode,
  docs/concepts.md#losses) and are buffers, not LoRA weights: saving the BatchNorm modules with the adapter is what lets
  base + adapter reproduce the unlearned model's predictions exactly. Freezing them instead (eval-mode
  BatchNorm) would change every method's training dynamics, which rely on batch statistics; they are tiny
  (4 numbers per channel). Their affine parameters train as in full unlearning.

The base model's own weights never change, so one Before model can serve many adapters. Methods see the
weights a LoRA model computes with, named as in the plain model, through :func:`effective_parameters`
(structguard's ψ, L2UL's θ) and compute importances on :func:`plain_copy` (the adapter merged in).

``peft`` is imported on first use only (it adds about 2 s to every start).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .modeling import StructGuardConfig, StructGuardForImageClassification

PEFT_TYPES = ("lora",)
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
#: The unlearned model's StructGuardConfig (projector size, deployed path), saved next to the adapter so that
#: the base model can be given the projector the adapter trained. Not ``config.json``: the folder is no full model.
UNLEARNED_CONFIG_FILE = "unlearned_config.json"


def _peft_classes() -> tuple[type, type, type]:
    """``(PeftModel, LoraLayer, ModulesToSaveWrapper)``, or three empty tuples when peft was never imported
    (then no model can be a peft model)."""
    if "peft" not in sys.modules:
        return (), (), ()
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    return PeftModel, LoraLayer, ModulesToSaveWrapper


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft.PeftModel``."""
    return isinstance(model, _peft_classes()[0])


def lora_targets(model: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the backbone's ``Conv2d``/``Linear`` modules that get LoRA factors.

    ``patterns`` (default: all) select modules by their name inside the backbone: a module matches a pattern
    equal to its name, to a dotted tail of it (``conv1``) or to a dotted head (``layer4``). ValueError when a
    pattern matches nothing.
    """
    layers = {
        name.removeprefix("backbone."): name
        for name, module in model.named_modules()
        if name.startswith("backbone.") and isinstance(module, (nn.Conv2d, nn.Linear))
    }
    if not patterns:
        return list(layers.values())
    chosen = []
    for pattern in patterns:
        found = [full for short, full in layers.items()
                 if short == pattern or short.endswith("." + pattern) or short.startswith(pattern + ".")]
        if not found:
            raise ValueError(
                f"lora_target_modules: {pattern!r} matches no Conv2d/Linear layer of the backbone "
                f"(e.g. {', '.join(list(layers)[:4])})"
            )
        chosen.extend(name for name in found if name not in chosen)
    return chosen


def norm_layers(model: nn.Module) -> list[str]:
    """Names of the backbone's BatchNorm layers (modules with running statistics)."""
    return [
        name for name, module in model.named_modules()
        if name.startswith("backbone.") and isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]


def add_lora(
    model: StructGuardForImageClassification,
    rank: int = 8,
    alpha: float | None = None,
    target_modules: Sequence[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` in place in a peft LoRA model (see the module docstring); returns the ``PeftModel``.

    ``alpha`` defaults to ``rank`` (LoRA scaling 1). Add the projector first: modules created later are not
    part of the adapter.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    if alpha is not None and alpha <= 0:
        raise ValueError(f"lora_alpha must be > 0, got {alpha}")
    saved = ["classifier", *(["projector"] if model.projector is not None else []), *norm_layers(model)]
    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        lora_dropout=0.0,
        target_modules=lora_targets(model, target_modules),
        modules_to_save=saved,
    )
    return get_peft_model(model, config)


def _effective(module: nn.Module, prefix: str, lora_layer, saved_wrapper) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(module, saved_wrapper):
        if module.disable_adapters:
            active = module.original_module
        else:
            active = module.modules_to_save[module.active_adapters[0]]
        yield from _effective(active, prefix, lora_layer, saved_wrapper)
        return
    if isinstance(module, lora_layer):
        base = module.get_base_layer()
        weight = base.weight
        if not (module.disable_adapters or module.merged):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight = weight + module.get_delta_weight(adapter)
        yield prefix + "weight", weight
        for name, param in base.named_parameters(recurse=False):
            if name != "weight":
                yield prefix + name, param
        return
    for name, param in module.named_parameters(recurse=False):
        yield prefix + name, param
    for name, child in module.named_children():
        yield from _effective(child, f"{prefix}{name}.", lora_layer, saved_wrapper)


def effective_parameters(model: nn.Module, under: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the weights ``model`` computes with, named as in the plain model.

    For a plain model: its ``named_parameters()``. For a peft LoRA model: base weight + scaled low-rank update
    for adapted layers (differentiable w.r.t. the LoRA factors), the trained copy of each ``modules_to_save``
    module, the frozen base weight elsewhere. ``under`` restricts to one submodule (``"backbone"``: ψ).
    """
    peft_model, lora_layer, saved_wrapper = _peft_classes()
    root = model.get_base_model() if isinstance(model, peft_model) else model
    if under:
        root = root.get_submodule(under)
    return _effective(root, f"{under}." if under else "", lora_layer, saved_wrapper)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` as a plain model (same predictions up to float rounding): a peft LoRA model's
    adapter is merged into the weights and each ``modules_to_save`` module replaced by its trained copy."""
    copied = copy.deepcopy(model)
    return copied.merge_and_unload() if is_peft_model(copied) else copied


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameter values (adapter factors and saved modules, for a LoRA model)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, folder: str | os.PathLike) -> Path:
    """``save_pretrained`` for a plain model; for a LoRA model the adapter plus ``unlearned_config.json``.

    peft's auto-generated ``README.md`` is not kept (the run writes its own model card).
    """
    folder = Path(folder)
    if not is_peft_model(model):
        model.save_pretrained(folder)
        return folder
    card = folder / "README.md"
    previous = card.read_bytes() if card.is_file() else None
    model.save_pretrained(folder)
    if previous is None:
        card.unlink(missing_ok=True)
    else:
        card.write_bytes(previous)
    model.get_base_model().config.to_json_file(folder / UNLEARNED_CONFIG_FILE)
    return folder


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved LoRA adapter (``adapter_config.json`` + ``unlearned_config.json``)."""
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file() and (Path(folder) / UNLEARNED_CONFIG_FILE).is_file()


def _adapter_file(adapter: str | os.PathLike, name: str, revision: str | None, token: str | None) -> Path:
    if Path(adapter).is_dir():
        path = Path(adapter) / name
        if not path.is_file():
            raise ValueError(f"{adapter} has no {name}: not a LoRA adapter saved by hf_structguard")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(adapter), name, revision=revision, token=token))


def load_adapter(
    adapter: str | os.PathLike,
    base_model: str | os.PathLike | StructGuardForImageClassification | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> nn.Module:
    """A saved LoRA adapter (folder or Hub repo id) on its base model, in eval mode (a ``PeftModel``).

    ``base_model`` defaults to the adapter's ``base_model_name_or_path`` (a Hub id once pushed); a model
    instance is wrapped in place. When the adapter trained a projector the base gets one first (its weights
    come from the adapter). ``.merge_and_unload()`` gives a plain ``StructGuardForImageClassification``.
    """
    from peft import PeftModel

    settings = json.loads(_adapter_file(adapter, ADAPTER_CONFIG_FILE, revision, token).read_text(encoding="utf-8"))
    unlearned = StructGuardConfig.from_json_file(_adapter_file(adapter, UNLEARNED_CONFIG_FILE, revision, token))
    if base_model is None:
        base_model = settings.get("base_model_name_or_path")
        if not base_model:
            raise ValueError(f"the adapter {adapter} does not name its base model: pass base_model=...")
    if not isinstance(base_model, StructGuardForImageClassification):
        base_model = StructGuardForImageClassification.from_pretrained(base_model, token=token)
    config = base_model.config
    if (config.backbone, config.num_labels, config.num_features) != (
        unlearned.backbone, unlearned.num_labels, unlearned.num_features
    ):
        raise ValueError(
            f"the adapter was trained on a {unlearned.backbone} with {unlearned.num_labels} classes, but the base "
            f"model is a {config.backbone} with {config.num_labels} classes"
        )
    if unlearned.projector_dim and base_model.projector is None:
        base_model.add_projector(unlearned.anchor_dim, unlearned.projector_dim, unlearned.projector_residual)
    config.classify_through_projector = unlearned.classify_through_projector
    return PeftModel.from_pretrained(base_model, str(adapter), revision=revision, token=token).eval()
