"""Build a :class:`StructGuardForImageClassification` from a timm name, a timm checkpoint or a saved model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import safetensors.torch
import timm
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from timm.models import load_state_dict, parse_model_name
from timm.models._hub import hf_split, load_model_config_from_hf, load_model_config_from_path

from .configuration import StructGuardConfig
from .modeling import StructGuardForImageClassification

logger = logging.getLogger(__name__)

_PICKLE_SUFFIXES = (".bin", ".pth", ".pth.tar", ".pt", ".ckpt")
_PICKLE_HINT = "pass allow_pickle=True if you trust the source (pickle files can run code when loaded)"


def build_model(
    name_or_path: str,
    *,
    num_labels: int | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    cifar_stem: bool | None = None,
    pretrained: bool = True,
    allow_pickle: bool = False,
) -> StructGuardForImageClassification:
    """Build a StructGuard model.

    ``name_or_path`` is one of:

    * a saved StructGuard model (a folder, ``local-dir:folder``, a Hub repo id or ``hf-hub:repo``, whose
      ``config.json`` has ``model_type: "structguard"``) -> ``from_pretrained``;
    * a timm checkpoint (``local-dir:folder`` or ``hf-hub:repo`` in timm's layout) -> its architecture,
      weights (backbone and classifier), mean/std, input size and ``label_names``;
    * a timm architecture name (``"resnet18"``) -> timm's pretrained weights (``pretrained=True``, new
      classifier with ``num_labels`` outputs) or a random initialisation (``pretrained=False``).

    ``num_labels``/``class_names`` describe the dataset: a checkpoint with another class count raises
    ValueError. ``cifar_stem`` (None = the checkpoint's choice, else stock stem) builds the 3×3 stride-1 stem
    (max-pool removed); a checkpoint whose weights do not fit the requested stem raises ValueError naming the
    mismatching shapes. Safetensors weights are preferred; pickle-only checkpoints (.bin/.pth) are refused
    unless ``allow_pickle=True``. The model is returned in eval mode.
    """
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_labels is None:
            num_labels = len(class_names)
        elif num_labels != len(class_names):
            raise ValueError(f"num_labels={num_labels} but {len(class_names)} class_names were given.")
    if num_labels is not None and num_labels < 1:
        raise ValueError(f"num_labels must be positive, got {num_labels}.")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}.")

    source, ref = _resolve_source(name_or_path)
    if source is None:
        model = _from_timm_name(ref, num_labels, class_names, image_size, cifar_stem, pretrained)
    else:
        config = _read_config(source, ref)
        if config.get("model_type") == StructGuardConfig.model_type:
            model = _from_structguard(source, ref, num_labels, class_names, image_size, cifar_stem, allow_pickle)
        else:
            model = _from_timm_checkpoint(
                source, ref, num_labels, class_names, image_size, cifar_stem, pretrained, allow_pickle
            )
    return model.eval()


def _resolve_source(name_or_path: str) -> tuple[str | None, str]:
    """``("local-dir"|"hf-hub"|None, reference)``; None means a timm registry name."""
    if os.path.isdir(name_or_path):
        return "local-dir", name_or_path
    source, _, ref = name_or_path.partition(":")
    if source in ("local-dir", "hf-hub") and ref:
        if source == "local-dir" and not os.path.isdir(ref):
            raise ValueError(f"local-dir: folder not found: {ref}")
        return source, ref
    if ":" not in name_or_path and "/" in name_or_path:
        if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
            raise ValueError(f"Folder not found: {name_or_path}")
        return "hf-hub", name_or_path  # a bare Hub repo id (owner/name[@revision])
    source, ref = parse_model_name(name_or_path)  # raises a clear ValueError for unknown prefixes
    if not timm.is_model(ref):
        raise ValueError(
            f"'{name_or_path}' is neither a folder, a Hub repo id nor a timm architecture "
            "(see timm.list_models())."
        )
    return None, ref


def _read_config(source: str, ref: str) -> dict:
    if source == "local-dir":
        path = Path(ref) / "config.json"
        if not path.is_file():
            raise ValueError(f"{ref} has no config.json: not a timm checkpoint nor a saved StructGuard model.")
    else:
        repo_id, revision = hf_split(ref)
        path = hf_hub_download(repo_id, "config.json", revision=revision)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _check_label_count(what: str, checkpoint_count: int, num_labels: int | None) -> None:
    if num_labels is not None and num_labels != checkpoint_count:
        raise ValueError(
            f"{what} has {checkpoint_count} classes but the dataset has {num_labels}; "
            "use a checkpoint trained on this dataset (or a plain timm architecture name to train a new classifier)."
        )


def _from_structguard(source, ref, num_labels, class_names, image_size, cifar_stem, allow_pickle):
    if not allow_pickle and source == "local-dir":
        files = os.listdir(ref)
        if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(_PICKLE_SUFFIXES) for f in files):
            raise ValueError(f"{ref} only has pickle weights ({', '.join(sorted(files))}); {_PICKLE_HINT}.")
    repo_id, revision = (ref, None) if source == "local-dir" else hf_split(ref)
    try:
        model = StructGuardForImageClassification.from_pretrained(
            repo_id, revision=revision, use_safetensors=None if allow_pickle else True
        )
    except OSError as err:
        if allow_pickle:
            raise
        raise ValueError(f"Could not load safetensors weights from {ref} ({err}); {_PICKLE_HINT}.") from err
    config = model.config
    _check_label_count(f"The saved model {ref}", config.num_labels, num_labels)
    if cifar_stem is not None and cifar_stem != config.cifar_stem:
        raise ValueError(
            f"The saved model {ref} was built with cifar_stem={config.cifar_stem}; drop cifar_stem={cifar_stem} "
            "(the stem is part of the saved weights)."
        )
    if image_size is not None and image_size != config.image_size:
        raise ValueError(f"The saved model {ref} expects image_size={config.image_size}, not {image_size}.")
    names = [config.id2label[i] for i in range(config.num_labels)]
    if class_names is not None and class_names != names:
        logger.warning("Dataset class names %s differ from the model's %s; keeping the model's.", class_names, names)
    return model


def _weights_file(source: str, ref: str, allow_pickle: bool) -> str:
    """Path of the checkpoint's weights: safetensors first, pickle files only with ``allow_pickle``."""
    if source == "local-dir":
        folder = Path(ref)
        safe = sorted(folder.glob("*.safetensors"))
        if safe:
            preferred = folder / "model.safetensors"
            return str(preferred if preferred in safe else safe[0])
        pickled = sorted(p for p in folder.iterdir() if p.name.endswith(_PICKLE_SUFFIXES))
        if not pickled:
            raise ValueError(f"No weights (.safetensors, .bin, .pth) found in {ref}.")
        if not allow_pickle:
            raise ValueError(f"{ref} only has pickle weights ({pickled[0].name}); {_PICKLE_HINT}.")
        return str(pickled[0])
    repo_id, revision = hf_split(ref)
    try:
        return hf_hub_download(repo_id, "model.safetensors", revision=revision)
    except EntryNotFoundError:
        if not allow_pickle:
            raise ValueError(f"hf-hub:{ref} has no model.safetensors; {_PICKLE_HINT}.") from None
        return hf_hub_download(repo_id, "pytorch_model.bin", revision=revision)


def _label_names(pretrained_cfg: dict, num_labels: int, class_names: list[str] | None) -> list[str]:
    names = pretrained_cfg.get("label_names")
    if names is not None and len(names) == num_labels:
        names = [str(n) for n in names]
        if class_names is not None and class_names != names:
            logger.warning("Dataset class names %s differ from the checkpoint's %s; keeping the checkpoint's.",
                           class_names, names)
        return names
    return class_names if class_names is not None else [str(i) for i in range(num_labels)]


def _make_config(arch, model_args, pretrained_cfg, num_labels, names, image_size, cifar_stem) -> StructGuardConfig:
    input_size = pretrained_cfg.get("input_size")
    return StructGuardConfig(
        backbone=arch,
        backbone_kwargs={k: v for k, v in (model_args or {}).items() if k not in ("num_classes", "pretrained")},
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        image_size=image_size or (int(input_size[-1]) if input_size else 32),
        mean=list(pretrained_cfg.get("mean") or timm.data.IMAGENET_DEFAULT_MEAN),
        std=list(pretrained_cfg.get("std") or timm.data.IMAGENET_DEFAULT_STD),
        cifar_stem=bool(cifar_stem),
    )


def _from_timm_checkpoint(source, ref, num_labels, class_names, image_size, cifar_stem, pretrained, allow_pickle):
    loader = load_model_config_from_path if source == "local-dir" else load_model_config_from_hf
    pretrained_cfg, arch, model_args = loader(ref)
    if not timm.is_model(arch):
        raise ValueError(f"Checkpoint {ref} names architecture '{arch}', unknown to timm {timm.__version__}.")
    state = None
    if pretrained:
        path = _weights_file(source, ref, allow_pickle)
        state = safetensors.torch.load_file(path) if path.endswith(".safetensors") else load_state_dict(path)
    classifier = _classifier_name(arch, model_args)
    if state is not None:
        if f"{classifier}.weight" not in state:
            raise ValueError(f"Checkpoint {ref} has no classifier weights ('{classifier}.weight').")
        checkpoint_labels = int(state[f"{classifier}.weight"].shape[0])
    else:
        checkpoint_labels = int(pretrained_cfg.get("num_classes") or num_labels or 0)
    if checkpoint_labels < 1:
        raise ValueError(f"Checkpoint {ref} records no class count; pass num_labels.")
    _check_label_count(f"Checkpoint {ref}", checkpoint_labels, num_labels)
    names = _label_names(pretrained_cfg, checkpoint_labels, class_names)
    config = _make_config(arch, model_args, pretrained_cfg, checkpoint_labels, names, image_size, cifar_stem)
    model = StructGuardForImageClassification(config)
    if state is not None:
        _load_timm_state(model, state, classifier, ref)
    return model


def _from_timm_name(name, num_labels, class_names, image_size, cifar_stem, pretrained):
    timm_model = timm.create_model(name, pretrained=pretrained, **({"num_classes": num_labels} if num_labels else {}))
    pretrained_cfg = dict(timm_model.pretrained_cfg)
    num_labels = int(timm_model.num_classes)
    names = class_names if class_names is not None else [str(i) for i in range(num_labels)]
    config = _make_config(timm_model.pretrained_cfg.get("architecture", name), {}, pretrained_cfg, num_labels,
                          names, image_size, cifar_stem)
    model = StructGuardForImageClassification(config)
    state = timm_model.state_dict()
    if cifar_stem:  # the stock stem's weights do not fit the CIFAR stem: keep its fresh initialisation
        own = model.backbone.state_dict()
        state = {k: v for k, v in state.items() if k not in own or own[k].shape == v.shape}
    _load_timm_state(model, state, pretrained_cfg.get("classifier", "fc"), name, strict=not cifar_stem)
    return model


def _classifier_name(arch: str, model_args: dict | None) -> str:
    pretrained_cfg = timm.models.get_pretrained_cfg(arch)
    if pretrained_cfg is not None and pretrained_cfg.classifier:
        return pretrained_cfg.classifier
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, **(model_args or {})).pretrained_cfg.get("classifier", "fc")


def _load_timm_state(model, state: dict, classifier: str, ref: str, strict: bool = True) -> None:
    """Load a timm state dict (backbone + classifier ``classifier.*``) into ``model``; clear errors on mismatch."""
    prefix = classifier + "."
    mapped = {
        ("classifier." + key[len(prefix):]) if key.startswith(prefix) else ("backbone." + key): value
        for key, value in state.items()
    }
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("projector.")}
    problems = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    stem_mismatch = any(p.startswith("backbone.conv1") for p in problems)
    if missing := sorted(set(own) - set(mapped)) if strict else []:
        problems.append(f"missing in checkpoint: {missing[:5]}")
    if unexpected := sorted(set(mapped) - set(own)):
        problems.append(f"not in model: {unexpected[:5]}")
    if problems:
        hint = ""
        if stem_mismatch and model.config.cifar_stem:
            hint = " The checkpoint was trained with the stock timm stem: use cifar_stem=False."
        elif stem_mismatch:
            hint = (" The checkpoint was trained with a CIFAR stem (3×3 stride-1 conv1), which timm's config.json "
                    "does not record: pass cifar_stem=True.")
        raise ValueError(f"Weights of {ref} do not fit timm '{model.config.backbone}': {'; '.join(problems)}.{hint}")
    model.load_state_dict(mapped, strict=strict)
