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
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from accelerate import PartialState
from huggingface_hub import constants as hub_constants
from transformers.trainer_utils import get_last_checkpoint

from .arguments import (
    CLIP_TEXT_ENCODER,
    PACKAGED_TEXT_ENCODER,
    AnchorArguments,
    DataArguments,
    ModelArguments,
    RunArguments,
)
from .anchors import SHIPPED, AnchorSet, build_anchor_set, load_attributes
from .data import ForgetSet, ImageClassificationData, load_image_data, select_forget_set
from .errors import UserInputError, check_output_dir, is_offline_miss, option_errors
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
from .trainer.trainer import resolve_checkpoint, resume_kind

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # <output_dir>/checkpoints/<method or request_N>/checkpoint-<step>

#: Forget-set size when none is given: the paper's smallest CIFAR request (16 of 50,000 = 0.03 %).
DEFAULT_FORGET_K = 16
#: The embedded default forgets 4 of its 1,437 digit training images (0.28 %), inside the paper's range of
#: 0.03–0.5 % of the training set; 16 would be 1.1 %, twice the paper's largest request.
EMBEDDED_DEFAULT_FORGET_K = 4


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
    """The Before model and a string naming where it came from (trains and caches the default).

    A model that cannot be found or read raises :class:`UserInputError` naming ``--model_name_or_path``.
    """
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        option = f"--model_name_or_path {name}"
        try:
            with option_errors(option, OSError):
                model = build_model(
                    name,
                    num_labels=data.num_classes,
                    class_names=data.class_names,
                    image_size=model_args.image_size,
                    cifar_stem=model_args.cifar_stem,
                    allow_pickle=model_args.allow_pickle,
                )
        except UserInputError as error:
            if is_offline_miss(error.__cause__) and _is_timm_name(name):
                raise UserInputError(f"{option}: timm fetches this architecture's pretrained weights from the Hub, "
                                     "which is not reachable (HF_HUB_OFFLINE=1 or no network), and they are not "
                                     "cached: give a local checkpoint (a saved model folder or local-dir:PATH), or "
                                     "run once online") from error.__cause__
            raise
        except Exception as error:  # safetensors' SafetensorError subclasses Exception only
            if type(error).__name__ != "SafetensorError":
                raise
            raise UserInputError(f"{option}: {_corrupt_file(name)} is not a readable safetensors file ({error}); "
                                 "download or save it again") from error
        return model, name
    recipe = PretrainArguments(
        backbone=model_args.default_backbone,
        image_size=model_args.image_size or 16,
        epochs=model_args.default_epochs,
        learning_rate=0.05,
        hflip=False,
        crop_padding=2,
        single_thread=True,  # the same first result on every machine
    )
    folder = _cache_dir() / "before" / recipe.cache_key(data.source)
    if (folder / "config.json").exists():
        logger.info("Using the cached Before model in %s", folder)
    else:
        logger.info("Training the default Before model (%s on %s) into %s", recipe.backbone, data.source, folder)
        _, metrics = pretrain_classifier(data, recipe, folder)
        logger.info("Before model test accuracy: %.2f %%", metrics["test_accuracy"])
    return StructGuardForImageClassification.from_pretrained(folder), str(folder)


def _is_timm_name(name: str) -> bool:
    import timm

    return not Path(name).exists() and timm.is_model(name)


def _corrupt_file(name: str) -> str:
    """The first unreadable ``*.safetensors`` file of a local model folder (else a description of where)."""
    from safetensors import safe_open

    folder = Path(name.removeprefix("local-dir:"))
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(path, "pt"):
                pass
        except Exception:  # noqa: BLE001  (SafetensorError and OSError alike mean unreadable)
            return str(path)
    return f"the weights file of {name}"


def resolve_attributes(data: ImageClassificationData, anchor_args: AnchorArguments):
    """The attribute file for this dataset (explicit, or the shipped one whose classes match)."""
    if anchor_args.attributes:
        with option_errors(f"--attributes {anchor_args.attributes}", OSError):
            return load_attributes(anchor_args.attributes, class_names=data.class_names)
    for name in SHIPPED:
        try:
            return load_attributes(f"shipped:{name}", class_names=data.class_names)
        except ValueError:
            continue
    raise UserInputError(
        "no shipped attribute file matches this dataset's classes; pass --attributes PATH "
        "(JSON class name -> list of attributes) or generate one with `python -m hf_structguard.anchors generate`"
    )


def build_anchors(data: ImageClassificationData, anchor_args: AnchorArguments, attributes=None) -> AnchorSet:
    """A saved anchor set (checked against the classes), or anchors encoded from the attribute file.

    A saved set or a text encoder that cannot be found or read raises :class:`UserInputError` naming the option.
    """
    if anchor_args.anchors:
        with option_errors("--anchors", OSError):
            return AnchorSet.load(anchor_args.anchors, class_names=data.class_names)
    encoder = anchor_args.text_encoder or default_text_encoder()
    with option_errors(f"--text_encoder {encoder}", OSError):
        return build_anchor_set(
            attributes if attributes is not None else resolve_attributes(data, anchor_args),
            encoder,
            class_names=data.class_names,
            join=anchor_args.anchor_join,
            anchors_per_class=anchor_args.anchors_per_class,
        )


def load_data(data_args: DataArguments) -> ImageClassificationData:
    """The dataset named by ``data_args`` (the embedded digits default when none is); any object with
    DataArguments' dataset, dataset_config, column and split fields will do (``scripts/pretrain.py``)."""
    with option_errors(f"--dataset {data_args.dataset}" if data_args.dataset else None, OSError):
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
    """The forget set the options name; UserInputError naming the option when it cannot be drawn."""
    num_train = len(data.train)
    if data_args.forget_ids_file:
        with option_errors(f"--forget_ids_file {data_args.forget_ids_file}", OSError):
            return select_forget_set(num_train, indices_file=data_args.forget_ids_file)
    if data_args.forget_classes:
        # A command line gives strings: a class name wins, otherwise a number is a class id.
        classes = [c if c in data.class_names or not c.isdigit() else int(c) for c in data_args.forget_classes]
        with option_errors("--forget_classes"):
            return data.select_forget_set(classes=classes)
    k = data_args.forget_k
    if k is None:
        k = EMBEDDED_DEFAULT_FORGET_K if data_args.dataset is None else DEFAULT_FORGET_K
    with option_errors("--forget_k"):
        return select_forget_set(num_train, k=k, seed=data_args.forget_seed)


def resume_points(option: str | bool | None, folders: dict[str, Path]) -> dict[str, str | None]:
    """The checkpoint each run (a method, or a request of a sequence) resumes from, checked before any work.

    ``option`` (``--resume_from_checkpoint``): empty = start afresh; "true"/"latest" = the newest checkpoint in
    each run's folder (a run without one starts afresh; at least one must exist); a checkpoint path = that
    checkpoint, for a run of one method only.
    """
    kind = resume_kind(option)
    if kind is None:
        return dict.fromkeys(folders)
    if kind == "latest":
        points = {name: get_last_checkpoint(folder) if folder.is_dir() else None for name, folder in folders.items()}
        if not any(points.values()):
            where = next(iter(folders.values())).parent
            raise UserInputError(f"--resume_from_checkpoint {option}: no checkpoint under {where}; a run writes them "
                                 "with --save_strategy steps (drop --resume_from_checkpoint to start afresh)")
        return points
    if len(folders) > 1:
        raise UserInputError(f"--resume_from_checkpoint {option}: one checkpoint for {len(folders)} runs "
                             f"({', '.join(folders)}); use --resume_from_checkpoint true (each run's latest)")
    return {name: resolve_checkpoint(option, folder) for name, folder in folders.items()}


def unlearning_config(method_args: UnlearningConfig, folder: Path, checkpoint: str | None) -> UnlearningConfig:
    """``method_args`` for one trainer: checkpointing to ``folder``, resuming from ``checkpoint``, and never
    pushing (the Trainer would create the repo and upload checkpoints; :func:`publish_run` pushes the finished,
    complete folder). A run that starts afresh first removes stale checkpoints of an earlier attempt from
    ``folder`` (main process)."""
    if checkpoint is None and PartialState().is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
    return dataclasses.replace(method_args, output_dir=str(folder), resume_from_checkpoint=checkpoint,
                               push_to_hub=False)


def incomplete_deletions(results: dict[str, dict]) -> list[str]:
    """The unlearned models (``results.json``'s ``methods``) that still classify forgotten samples correctly."""
    return [name for name, metrics in results.items() if name != "before" and metrics["A_f"] > 0]


def warn_incomplete(results: dict[str, dict], allow_incomplete: bool) -> None:
    """Print a loud warning (stderr) for every model whose forget accuracy is not 0."""
    for name in incomplete_deletions(results):
        metrics = results[name]
        print(
            f"\nWARNING: {name} did NOT complete the deletion: A_f = {metrics['A_f']:.2f} % of the forgotten samples "
            f"are still classified correctly after {metrics['steps']} steps. Its card and deletion "
            "receipt say 'incomplete'; --push_to_hub refuses it"
            f"{' (allowed here by --allow_incomplete)' if allow_incomplete else ' unless --allow_incomplete true'}. "
            "Unlearn further (a higher --num_train_epochs or --learning_rate).",
            file=sys.stderr,
        )


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


def check_run_options(config: UnlearningConfig, model_args: ModelArguments, methods: list[str]) -> dict[str, UnlearningConfig]:
    """Each method's config; unknown names, bad values, a push that cannot succeed and an output folder that
    cannot be written raise :class:`UserInputError` here, before any work."""
    with option_errors():
        method_configs = {name: config.for_method(name) for name in methods}
        check_push_arguments(config, model_args)
    check_output_dir(config.output_dir)
    return method_configs


def write_run_inputs(output_dir: Path, forget: ForgetSet, anchors: AnchorSet, before: StructGuardForImageClassification) -> None:
    """The run's inputs into ``output_dir``: the forget set (private, local only: never pushed), anchors and
    the Before model."""
    output_dir.mkdir(parents=True, exist_ok=True)
    forget.to_json(output_dir / FORGET_SET_FILE)
    anchors.save(output_dir / "anchors")
    before.save_pretrained(output_dir / "before")


def evaluate_before(before: StructGuardForImageClassification, sets: EvalSets, data_args: DataArguments) -> dict:
    """The Before model's metrics, its evaluation time under ``seconds_phases``."""
    metrics = evaluate_model(before, sets, retrieval=data_args.retrieval, mia=data_args.mia)
    metrics["seconds_phases"] = {"evaluation": metrics.pop("seconds")}
    return metrics


def base_run_config(
    data_args: DataArguments,
    model_args: ModelArguments,
    anchor_args: AnchorArguments,
    data: ImageClassificationData,
    before_source: str,
    anchors: AnchorSet,
) -> dict:
    """What ``results.json``'s ``run_config`` records about the data, the Before model and the anchors."""
    return {
        "data": dataclasses.asdict(data_args),
        "model": {**dataclasses.asdict(model_args), "before_source": before_source},
        "anchors": {**dataclasses.asdict(anchor_args), "metadata": anchors.metadata},
    }


def resolve_forget_accuracy_target(config: UnlearningConfig, before_test_accuracy: float) -> UnlearningConfig:
    """``config`` with ``forget_accuracy_target='retrained'`` replaced by its estimate, the Before model's test
    accuracy (%): to a model retrained without them the forget images are unseen images, as the test images are to
    the Before model (same recipe, nearly the same data), so no retain data and no retraining is needed."""
    if config.forget_accuracy_target != "retrained":
        return config
    return dataclasses.replace(config, forget_accuracy_target=f"{before_test_accuracy:.6g}")


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
    output_dir = Path(config.output_dir)
    method_configs = check_run_options(config, model_args, methods)
    folders = {name: output_dir / CHECKPOINTS_DIR / name for name in methods}
    checkpoints = resume_points(config.resume_from_checkpoint, folders)
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
    saved_anchors = build_anchors(data, anchor_args) if anchor_args.anchors else None
    if any(get_method(name).needs_retain for name in methods):
        logger.warning("Oracle-style methods use the retain set: they are a reference, not retain-free unlearning.")
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    before, before_source = load_before_model(data, model_args)
    seconds["before_model"] = time.perf_counter() - started
    sets = _eval_sets(data, forget, before.config.image_size, data_args)

    started = time.perf_counter()
    anchors = saved_anchors if saved_anchors is not None else build_anchors(data, anchor_args, attributes)
    seconds["anchors"] = time.perf_counter() - started

    if is_main:
        write_run_inputs(output_dir, forget, anchors, before)

    started = time.perf_counter()
    results = {"before": evaluate_before(before, sets, data_args)}
    seconds["evaluate_before"] = time.perf_counter() - started

    probe_cache: dict[tuple, ProbeSet] = {}
    logs: dict[str, list[dict]] = {}
    unlearned: dict[str, StructGuardForImageClassification] = {}
    for name, method_args in method_configs.items():
        method_args = method_configs[name] = resolve_forget_accuracy_target(method_args, results["before"]["A_test"])
        trainer_args = unlearning_config(method_args, folders[name], checkpoints[name])
        unlearned[name], results[name], logs[name] = unlearn_and_evaluate(
            before, trainer_args, sets, anchors, data.num_classes, data_args, probe_cache
        )

    run_config = {
        **base_run_config(data_args, model_args, anchor_args, data, before_source, anchors),
        "unlearning": {name: method_args.to_sanitized_dict() for name, method_args in method_configs.items()},
        "dataset_source": data.source,
        "class_names": data.class_names,
        "seconds": seconds,
        "versions": library_versions(),
    }
    if is_main:
        write_run_outputs(output_dir, run_config, forget, results, unlearned, logs, run_args)
    PartialState().wait_for_everyone()
    return json.loads((output_dir / "results.json").read_text())


def unlearn_and_evaluate(
    before: StructGuardForImageClassification,
    method_args: UnlearningConfig,
    sets: EvalSets,
    anchors: AnchorSet,
    num_classes: int,
    data_args: DataArguments,
    probe_cache: dict[tuple, ProbeSet],
) -> tuple[StructGuardForImageClassification, dict, list[dict]]:
    """Unlearn ``sets.forget`` from a copy of ``before`` with one method; returns the model, its metrics (with
    steps, timings per phase, probe count and hit rate) and the trainer's log history."""
    forget_images, forget_labels = sets.forget
    started = time.perf_counter()
    probes = probes_for_config(before, forget_images, forget_labels, num_classes, method_args, probe_cache)
    probe_seconds = time.perf_counter() - started
    retain = sets.retain if get_method(method_args.method).needs_retain else None
    model, info = run_unlearning(
        copy.deepcopy(before), method_args, forget_images, forget_labels, probes, anchors=anchors, retain_dataset=retain,
    )
    metrics = evaluate_model(model, sets, reference_model=before, retrieval=data_args.retrieval, mia=data_args.mia)
    phases = {"probes": probe_seconds, **info.get("seconds_phases", {}), "unlearning": info["seconds"]}
    phases["evaluation"] = metrics.pop("seconds")
    metrics.update(seconds=probe_seconds + info["seconds"], seconds_phases=phases)
    metrics.update(steps=info["steps"], stopped_at_zero=info["stopped_at_zero"], num_probes=len(probes))
    metrics["probe_hit_rate"] = target_hit_rate(before, probes)  # % of probes the Before model calls their target
    metrics["probe_epsilon"] = probes.config.epsilon  # the radius used (shrunk when probe_min_hit_rate > 0)
    metrics["trainable_parameters"] = info["trainable_parameters"]
    logger.info("%s: A_test %.2f  A_r %.2f  A_f %.2f  (%d steps)", method_args.method, metrics["A_test"],
                metrics["A_r"], metrics["A_f"], info["steps"])
    return model, metrics, info["log_history"]


def write_run_outputs(
    output_dir: Path,
    run_config: dict,
    forget: ForgetSet,
    results: dict[str, dict],
    unlearned: dict[str, StructGuardForImageClassification],
    logs: dict[str, list[dict]],
    run_args: RunArguments,
) -> None:
    """``results.json``, each unlearned model with its log and card, the plots and the printed table; then
    :func:`finish_run` (main process only)."""
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
    finish_run(output_dir, results, run_args)


def finish_run(output_dir: Path, results: dict[str, dict], run_args: RunArguments) -> None:
    """The end of a completed run: warn about incomplete deletions, remove the checkpoints (unless kept)."""
    warn_incomplete(results, run_args.allow_incomplete)
    if not run_args.keep_checkpoints:
        shutil.rmtree(output_dir / CHECKPOINTS_DIR, ignore_errors=True)


def publish_run(output_dir: str | os.PathLike, methods: list[str], config: UnlearningConfig, run_args: RunArguments) -> list[str]:
    """Push each unlearned model of a finished run (and optionally its anchors); returns the model repo ids.

    One method goes to ``hub_model_id``; several go to ``<hub_model_id>-<method>``. The local folder is
    complete before the first network call, so a failed push can simply be run again. An incomplete deletion
    is refused (:class:`UserInputError`) before any upload unless ``run_args.allow_incomplete``.
    """
    if not PartialState().is_main_process:
        return []
    output_dir = Path(output_dir)
    results = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))["methods"]
    incomplete = incomplete_deletions({name: results[name] for name in methods})
    if incomplete and not run_args.allow_incomplete:
        raise UserInputError(
            f"--push_to_hub: {', '.join(incomplete)} did not complete the deletion (A_f > 0: forgotten samples still "
            "recognised); nothing was pushed. Unlearn further, or pass --allow_incomplete true to publish it marked "
            "incomplete"
        )
    if run_args.anchors_hub_id:
        AnchorSet.load(output_dir / "anchors").push_to_hub(
            run_args.anchors_hub_id, token=config.hub_token, private=config.hub_private_repo
        )
    repos = []
    for name in methods:
        repo_id = config.hub_model_id if len(methods) == 1 else f"{config.hub_model_id}-{name}"
        push_run(
            output_dir, name, repo_id, token=config.hub_token, private=bool(config.hub_private_repo),
            anchors_repo=run_args.anchors_hub_id, allow_incomplete=run_args.allow_incomplete,
        )
        repos.append(repo_id)
    return repos
