"""Push an unlearned model of a run folder to the Hub: model, config, preprocessing, card and receipt.

Everything is written locally first (card, receipt, ``preprocessor_config.json``), then only an explicit
list of public files is uploaded. Private files (``forget_set.json``, ``deletion_salt.txt``, probes, trainer
checkpoints, anything else) never leave the machine. A failed push leaves the local folder complete and
can simply be run again (the repo is created with ``exist_ok=True``; unchanged files are skipped).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi

from ..lora import ADAPTER_CONFIG_FILE, UNLEARNED_CONFIG_FILE, is_adapter_folder
from .card import CARD_FILE, _hub_id, read_saved_model, write_model_card
from ..errors import UserInputError
from .receipt import FORGET_SET_FILE, RECEIPT_FILE, SALT_FILE, DeletionReceipt

logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
PUBLIC_FILES = ("config.json", PREPROCESSOR_FILE, CARD_FILE, RECEIPT_FILE, "log_history.json",
                "model.safetensors.index.json", ADAPTER_CONFIG_FILE, UNLEARNED_CONFIG_FILE)
PUBLIC_PATTERNS = ("*.safetensors",)
PRIVATE_PATTERNS = (FORGET_SET_FILE, SALT_FILE, "forget_set*", "*salt*", "probes*", "*forget_ids*", "*indices*")


def write_preprocessor_config(model_dir: str | os.PathLike) -> Path:
    """Write ``preprocessor_config.json`` for the model in ``model_dir`` (from its config, or a LoRA adapter's).

    A ``ViTImageProcessor`` that converts to RGB, resizes to the model's square ``image_size`` (bilinear,
    as in training) and rescales to [0, 1]; ``do_normalize`` is off because the model normalises inside
    ``forward`` (``image_mean``/``image_std`` are recorded for information).
    """
    from PIL import Image
    from transformers import ViTImageProcessor

    model_dir = Path(model_dir)
    config, _ = read_saved_model(model_dir)
    if "image_size" not in config:
        raise ValueError(f"{model_dir}/config.json has no image_size: is it a StructGuard model folder?")
    size = int(config["image_size"])
    processor = ViTImageProcessor(
        do_resize=True, size={"height": size, "width": size}, resample=Image.Resampling.BILINEAR,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=False, do_convert_rgb=True,
        image_mean=config.get("mean"), image_std=config.get("std"),
    )
    processor.save_pretrained(model_dir)
    return model_dir / PREPROCESSOR_FILE


def public_files(model_dir: str | os.PathLike) -> list[str]:
    """Names of the files of ``model_dir`` that may be published (top level only, private names excluded)."""
    model_dir = Path(model_dir)
    names = []
    for path in sorted(model_dir.iterdir()):
        name = path.name
        if not path.is_file() or any(fnmatch.fnmatch(name, pattern) for pattern in PRIVATE_PATTERNS):
            continue
        if name in PUBLIC_FILES or any(fnmatch.fnmatch(name, pattern) for pattern in PUBLIC_PATTERNS):
            names.append(name)
    return names


def push_run(
    output_dir: str | os.PathLike,
    method: str,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    endpoint: str | None = None,
    *,
    anchors_repo: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    commit_message: str | None = None,
    salt: str | None = None,
    allow_incomplete: bool = False,
) -> CommitInfo:
    """Push ``<output_dir>/<method>/`` (the unlearned model or LoRA adapter, and its card) to the repo ``repo_id``.

    Local steps first (no network): when ``<output_dir>/results.json`` exists the card is (re-)rendered
    with ``repo_id`` (:func:`~hf_structguard.hub.write_model_card`, which also takes ``anchors_repo``,
    ``base_model``, ``dataset`` and ``salt``), otherwise an existing ``README.md`` is used; ``preprocessor_config.json`` is written if missing.
    Then the repo is created if needed (``exist_ok=True``) and the public files (:func:`public_files`) are
    uploaded in one commit; a file that already has the same content on the Hub is skipped, so re-running
    after a failure is safe. ``endpoint`` selects another Hub (default: ``HF_ENDPOINT``). Returns the
    commit info.

    An incomplete deletion (the receipt's ``complete`` is False: forgotten samples still recognised) is refused
    with a :class:`~hf_structguard.errors.UserInputError` before any network call unless ``allow_incomplete``.

    A LoRA adapter loads on top of its base model, which must be on the Hub (:func:`adapter_base_model`);
    its ``adapter_config.json`` is pointed at that repo id before the upload.
    """
    output_dir = Path(output_dir)
    model_dir = output_dir / method
    if not re.fullmatch(r"[\w.-]+/[\w.-]+|[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}.")
    adapter = is_adapter_folder(model_dir)
    if not ((model_dir / "config.json").is_file() or adapter) or not any(model_dir.glob("*.safetensors")):
        raise ValueError(
            f"{model_dir} has no saved model (config.json or a LoRA adapter, + *.safetensors): run the method "
            "with save_models on."
        )
    results_file = output_dir / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    if adapter:
        base_model = adapter_base_model(base_model, (results.get("run_config") or {}).get("model"), model_dir)
        settings_file = model_dir / ADAPTER_CONFIG_FILE
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        if settings.get("base_model_name_or_path") != base_model:
            settings["base_model_name_or_path"] = base_model
            settings_file.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if results:
        write_model_card(output_dir, method, results, results.get("run_config") or {}, anchors_repo=anchors_repo,
                         base_model=base_model, dataset=dataset, repo_id=repo_id, salt=salt)
    elif not (model_dir / CARD_FILE).is_file():
        raise ValueError(f"Neither {results_file} nor {model_dir / CARD_FILE} exists: write the model card first.")
    if not (model_dir / PREPROCESSOR_FILE).is_file():
        write_preprocessor_config(model_dir)
    receipt = DeletionReceipt.load(model_dir / RECEIPT_FILE) if (model_dir / RECEIPT_FILE).is_file() else None
    if receipt is not None and not receipt.complete and not allow_incomplete:
        raise UserInputError(
            f"--push_to_hub: {method} did not complete the deletion ({receipt.remaining_forget_accuracy:.2f} % of the "
            "forgotten samples are still classified correctly); not pushed. Unlearn further (e.g. a higher "
            "--num_train_epochs), or pass --allow_incomplete true to publish it marked incomplete"
        )

    files = public_files(model_dir)
    _check_no_secret(model_dir, files, output_dir / SALT_FILE, salt)
    logger.info("Pushing %s to %s: %s", model_dir, repo_id, ", ".join(files))

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=model_dir,
        repo_id=repo_url.repo_id,
        allow_patterns=files,
        commit_message=commit_message or f"Upload {method} unlearned model (k={_receipt_k(model_dir)})",
    )
    logger.info("Pushed %s", info.commit_url)
    return info


def adapter_base_model(
    base_model: str | None, model_args: dict | None = None, model_dir: str | os.PathLike | None = None
) -> str:
    """The Hub repo id of a LoRA adapter's base model: ``base_model``, else the run's ``model_name_or_path``,
    else the adapter's ``base_model_name_or_path``, whichever is a Hub id first; ValueError when none is."""
    candidates = [base_model, (model_args or {}).get("model_name_or_path")]
    if model_dir is not None and (Path(model_dir) / ADAPTER_CONFIG_FILE).is_file():
        settings = json.loads((Path(model_dir) / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
        candidates.append(settings.get("base_model_name_or_path"))
    for candidate in candidates:
        if candidate and _hub_id(candidate):
            return _hub_id(candidate)
    raise ValueError(
        "a LoRA adapter is loaded on top of its base model, so the base model must be on the Hub: push the Before "
        "model first and pass base_model=<repo id>, or run with --model_name_or_path <repo id>."
    )


def _receipt_k(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / RECEIPT_FILE).read_text(encoding="utf-8"))["k"])
    except (OSError, ValueError, KeyError):
        return "?"


def _check_no_secret(model_dir: Path, files: list[str], salt_file: Path, salt: str | None) -> None:
    """Refuse to push when a file to upload contains the receipt salt (a last guard before the network)."""
    secrets = [s for s in (salt, salt_file.read_text(encoding="utf-8").strip() if salt_file.is_file() else None) if s]
    for name in files:
        data = (model_dir / name).read_bytes()
        if any(secret.encode() in data for secret in secrets):
            raise ValueError(f"{model_dir / name} contains the private deletion salt; it must not be pushed.")
