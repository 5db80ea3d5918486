"""Sequential deletion requests (``scripts/sequential.py``): unlearn request 1, then request 2 starting from
its result, and so on, with one method.

Each request is one unlearning run (:func:`~hf_structguard.trainer.run_unlearning`) on the model the previous
request left:

- ``--sequential_reference original`` (default): the ORIGINAL Before model stays the reference of every
  request (S_ori, ψ^ori for structguard; θ0 and Ω for L2UL; the drift log), so the structure the method
  protects does not drift with the requests. ``previous``: the model that starts the request is the reference
  (each request is a fresh run on it).
- ``--sequential_probes previous`` (default): a request's probes come from the model that starts it (the model
  deployed when the request arrives); ``original``: from the Before model.
- ``--sequential_forget union`` (default): the deletion loss and the stopping rule (forget accuracy exactly 0)
  run over every sample forgotten so far, so earlier requests cannot come back; the probes come from the new
  request's samples only. The data owner keeps the earlier forget samples for this (they are used for nothing
  else). ``request``: a request unlearns its own samples only (the earlier ones are gone); ``A_f_union`` then
  shows whether earlier samples came back.
- With ``--peft lora`` the first request creates the adapter and later requests keep training it: the result
  is still ONE adapter on the Before model.

After every request the model is evaluated with the UNION of the requests so far as forget set: its ``A_f``
(also ``A_f_union``) must stay 0 (forgotten instances must not come back; a warning is logged otherwise),
and ``A_f_requests`` lists each request's own A_f. The retain set is the same for every request (train minus
the union of ALL requests), so A_r is comparable across requests and with a one-shot run on the union.

``results.json`` holds ``methods = {"before", <method>}``: ``<method>`` is the final model (forget set = the
union; ``steps`` and ``seconds`` summed over the requests) with ``requests``, the list of every request's
metrics. The final model (or adapter) goes to ``<output_dir>/<method>`` with its card, whose deletion receipt
covers the union (``forget_set.json``); the per-request ids stay in the private ``forget_set_requests.json``.

Each request checkpoints to ``<output_dir>/checkpoints/request_<n>``; ``--resume_from_checkpoint true``
continues an interrupted sequence: finished requests are restored from their final checkpoint, the
interrupted one resumes from its latest, later ones start afresh (see :func:`~hf_structguard.pipeline.resume_points`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from accelerate import PartialState

from .arguments import AnchorArguments, DataArguments, ModelArguments, RunArguments, SequentialArguments
from .data import ForgetSet, select_forget_set
from .data.forget import write_private_text
from .errors import UserInputError, option_errors
from .evaluation import EvalSets, evaluate_model, format_results_table, write_results
from .evaluation.accuracy import predict
from .hub import library_versions, load_or_create_salt, write_model_card
from .lora import save_model
from .methods import get_method
from .pipeline import (
    CHECKPOINTS_DIR,
    base_run_config,
    build_anchors,
    check_run_options,
    evaluate_before,
    finish_run,
    load_before_model,
    load_data,
    resolve_attributes,
    resume_points,
    settle_config,
    unlearning_config,
    write_run_inputs,
)
from .plots import plot_run
from .probes import probes_for_config
from .trainer import UnlearningConfig, run_unlearning

logger = logging.getLogger(__name__)

REQUESTS_FILE = "forget_set_requests.json"  # private: the ids of every request


def plan_requests(num_train: int, seq_args: SequentialArguments, seed: int = 0) -> list[ForgetSet]:
    """The forget set of every request; ValueError (before any work) for bad, out-of-range or overlapping ids."""
    if seq_args.forget_ids_files:
        requests = []
        for path in seq_args.forget_ids_files:
            with option_errors(f"--forget_ids_files {path}", OSError):
                requests.append(select_forget_set(num_train, indices_file=path))
    else:
        total = seq_args.num_requests * seq_args.request_k
        if total > num_train:
            raise UserInputError(f"{seq_args.num_requests} requests of {seq_args.request_k} rows need {total} rows, "
                                 f"but the train split has {num_train}")
        order = select_forget_set(num_train, k=total, seed=seed).indices
        k = seq_args.request_k
        requests = [ForgetSet(order[i * k:(i + 1) * k], mode="random", seed=seed)
                    for i in range(seq_args.num_requests)]
    seen: dict[int, int] = {}  # id -> request that forgets it
    for number, request in enumerate(requests, start=1):
        shared = sorted(i for i in request.indices if i in seen)
        if shared:
            raise UserInputError(
                f"forget-id files overlap: {seq_args.forget_ids_files[number - 1]} (request {number}) repeats "
                f"{len(shared)} id(s) of request {seen[shared[0]]}, e.g. {shared[:5]}; each training row can be "
                "forgotten once"
            )
        seen.update((i, number) for i in request.indices)
    return requests


def _cat(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([images for images, _ in pairs]), torch.cat([labels for _, labels in pairs])


def run_sequential(
    data_args: DataArguments,
    model_args: ModelArguments,
    anchor_args: AnchorArguments,
    run_args: RunArguments,
    seq_args: SequentialArguments,
    config: UnlearningConfig,
) -> dict:
    """Run the sequence of deletion requests (module docstring); returns the content of ``results.json``."""
    method, method_args = _sequence_method(data_args, model_args, run_args, config)
    output_dir = Path(config.output_dir)
    count = len(seq_args.forget_ids_files) if seq_args.forget_ids_files else seq_args.num_requests
    folders = [output_dir / CHECKPOINTS_DIR / f"request_{number}" for number in range(1, count + 1)]
    checkpoints = list(resume_points(config.resume_from_checkpoint, dict(enumerate(folders))).values())
    is_main = PartialState().is_main_process

    data = load_data(data_args)
    requests = plan_requests(len(data.train), seq_args, data_args.forget_seed)
    union = ForgetSet([i for request in requests for i in request.indices], mode=requests[0].mode,
                      seed=requests[0].seed)
    attributes = None if anchor_args.anchors else resolve_attributes(data, anchor_args)
    saved_anchors = build_anchors(data, anchor_args) if anchor_args.anchors else None  # checked before any work
    before, before_source = load_before_model(data, model_args)
    size = before.config.image_size
    test = data.tensors("test", None, size)
    retain = data.tensors("train", union.retain_indices(len(data.train)).tolist(), size)
    forgets = [data.tensors("train", request.indices, size) for request in requests]
    anchors = saved_anchors if saved_anchors is not None else build_anchors(data, anchor_args, attributes)

    def eval_sets(forget) -> EvalSets:
        return EvalSets(test=test, retain=retain, forget=forget, retain_subsample=data_args.retain_eval_size,
                        seed=data_args.eval_seed)

    if is_main:
        write_run_inputs(output_dir, union, anchors, before)  # the receipt covers the union
        write_private_text(output_dir / REQUESTS_FILE, json.dumps([r.indices for r in requests]) + "\n")
    results = {"before": evaluate_before(before, eval_sets(_cat(forgets)), data_args)}

    model = copy.deepcopy(before)
    records: list[dict] = []
    logs: dict[str, list[dict]] = {}
    for number in range(1, len(requests) + 1):
        so_far = _cat(forgets[:number])
        # the importance budget is |D_r| as known at this request: later requests are not known yet
        request_args = settle_config(method_args, len(data.train) - len(so_far[1]))
        started = time.perf_counter()
        probe_model = before if seq_args.sequential_probes == "original" else model
        probes = probes_for_config(probe_model, *forgets[number - 1], data.num_classes, request_args, {})
        images, labels = so_far if seq_args.sequential_forget == "union" else forgets[number - 1]
        probe_seconds = time.perf_counter() - started
        model, info = run_unlearning(
            model, unlearning_config(request_args, folders[number - 1], checkpoints[number - 1]), images, labels,
            probes, anchors=anchors,
            retain_dataset=retain if get_method(method).needs_retain else None,
            reference_model=before if seq_args.sequential_reference == "original" else None,
        )
        metrics = evaluate_model(model, eval_sets(so_far), reference_model=before, retrieval=data_args.retrieval,
                                 mia=data_args.mia)
        records.append(_request_record(metrics, model, so_far, requests, number, info, probe_seconds, len(probes),
                                       request_args.importance_num_samples))
        logs[f"request_{number}"] = info["log_history"]

    results[method] = {**records[-1], "steps": sum(r["steps"] for r in records),
                       "seconds": sum(r["seconds"] for r in records), "requests": records}
    run_config = {
        **base_run_config(data_args, model_args, anchor_args, data, before_source, anchors),
        "unlearning": {method: request_args.to_sanitized_dict()},  # as settled for the last request
        "sequential": dataclasses.asdict(seq_args),
        "dataset_source": data.source,
        "class_names": data.class_names,
        "versions": library_versions(),
    }
    if is_main:
        _write_sequence_outputs(output_dir, run_config, union, requests, results, method, model, logs, run_args)
    PartialState().wait_for_everyone()
    return json.loads((output_dir / "results.json").read_text())


def _sequence_method(
    data_args: DataArguments, model_args: ModelArguments, run_args: RunArguments, config: UnlearningConfig
) -> tuple[str, UnlearningConfig]:
    """The sequence's one method and its config; :class:`UserInputError` for options a sequence cannot take."""
    if run_args.methods and len(run_args.methods) > 1:
        raise UserInputError(f"a sequence of requests runs one method (--method), got --methods {run_args.methods}")
    if data_args.forget_ids_file or data_args.forget_classes:
        raise UserInputError("a sequence takes its requests from --forget_ids_files or --num_requests/--request_k, "
                             "not --forget_ids_file/--forget_classes")
    method = run_args.methods[0] if run_args.methods else config.method
    return method, check_run_options(config, model_args, [method])[method]


def _request_record(
    metrics: dict,
    model: nn.Module,
    so_far: tuple[torch.Tensor, torch.Tensor],
    requests: list[ForgetSet],
    number: int,
    info: dict,
    probe_seconds: float,
    num_probes: int,
    importance_num_samples: int | None,
) -> dict:
    """``metrics`` (the evaluation after request ``number`` of ``requests``, 1-based, on everything forgotten
    ``so_far``) completed into the request's record: its forget accuracy per request, steps, sizes and timings;
    warns when samples forgotten earlier are recognised again."""
    correct = predict(model, so_far[0])[0].argmax(1) == so_far[1]
    bounds = np.cumsum([0] + [r.k for r in requests[:number]])
    metrics.update(
        request=number, k=requests[number - 1].k, k_union=int(bounds[-1]), A_f_union=metrics["A_f"],
        A_f_requests=[100.0 * correct[a:b].double().mean().item() for a, b in zip(bounds[:-1], bounds[1:])],
        steps=info["steps"], stopped_at_zero=info["stopped_at_zero"], num_probes=num_probes,
        importance_num_samples=importance_num_samples,
        trainable_parameters=info["trainable_parameters"], seconds=probe_seconds + info["seconds"],
        seconds_phases={"probes": probe_seconds, **info["seconds_phases"], "unlearning": info["seconds"],
                        "evaluation": metrics.pop("seconds")},
    )
    if metrics["A_f_union"] > 0:
        logger.warning("after request %d, %.2f %% of the samples forgotten so far are classified correctly "
                       "again (per request: %s)", number, metrics["A_f_union"], metrics["A_f_requests"])
    logger.info("request %d/%d: A_test %.2f  A_r %.2f  A_f %.2f  A_f(union) %.2f  (%d steps)", number,
                len(requests), metrics["A_test"], metrics["A_r"], metrics["A_f_requests"][-1], metrics["A_f_union"],
                info["steps"])
    return metrics


def _write_sequence_outputs(
    output_dir: Path,
    run_config: dict,
    union: ForgetSet,
    requests: list[ForgetSet],
    results: dict[str, dict],
    method: str,
    model: nn.Module,
    logs: dict[str, list[dict]],
    run_args: RunArguments,
) -> None:
    """``results.json`` (the union's and each request's fingerprint), the final model with its log and card,
    the plots and the printed table; then :func:`finish_run` (main process only)."""
    salt = load_or_create_salt(output_dir)
    forget_info = {"k": union.k, "mode": union.mode, "fingerprint_sha256_salted": union.fingerprint(salt),
                   "requests": [{"k": r.k, "fingerprint_sha256_salted": r.fingerprint(salt)} for r in requests]}
    write_results(output_dir / "results.json", run_config, forget_info, results)
    content = json.loads((output_dir / "results.json").read_text())
    if run_args.save_models:
        save_model(model, output_dir / method)
        history = [{"request": int(name.split("_")[1]), **row} for name, log in logs.items() for row in log]
        (output_dir / method / "log_history.json").write_text(json.dumps(history, indent=1))
        write_model_card(output_dir, method, content, run_config, anchors_repo=run_args.anchors_hub_id)
    if run_args.plots:
        plot_run(output_dir, results, logs)
    records = results[method]["requests"]
    print(format_results_table({"before": results["before"], **{f"request {r['request']}": r for r in records}}))
    finish_run(output_dir, {"before": results["before"], method: results[method]}, run_args)
