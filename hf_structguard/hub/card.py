"""Model cards for unlearned models, rendered from ``model_cards/model_card.md``.

The card's YAML carries a ``model-index`` (huggingface_hub ``ModelCardData(eval_results=[EvalResult...])``)
with the Before and after numbers; the body has a readable results table, the method and its
hyperparameters, base model / dataset / anchor links, library versions, the deletion receipt and the
limitations. Nothing that identifies the forgotten samples is published: no images, no ids, no salt, and
no seeds (with k and a public dataset, the forget-set seed would give the ids back).
"""

from __future__ import annotations

import json
import logging
import os
import re
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..lora import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, UNLEARNED_CONFIG_FILE, is_adapter_folder
from ..methods import METHOD_REGISTRY
from .receipt import DeletionReceipt, receipt_for_run

logger = logging.getLogger(__name__)

TEMPLATE = "model_card.md"
CARD_FILE = "README.md"
HUB_URL = "https://huggingface.co"
LIBRARIES = ("hf-structguard", "torch", "transformers", "timm", "datasets", "accelerate", "huggingface_hub", "peft")

# (key path, label, split, metric type, scale of the stored value, higher is better)
_ACCURACY_ROWS = [
    (("A_test",), "A_test", "test", "accuracy", 1.0, True),
    (("A_r",), "A_r", "train (retain)", "accuracy", 1.0, True),
    (("forget_error",), "100 − A_f", "train (forget)", "forget_error", 1.0, True),
]
_RETRIEVAL_ROWS = [
    (("retrieval", which, metric), f"{metric} ({which} queries)", f"train ({which})", metric.lower(), 1.0,
     which == "retain")
    for which in ("retain", "forget") for metric in ("R@1", "R@5", "R@10", "mAP")
]
_MIA_ROWS = [
    (("mia", "forget_member_rate"), "MIA: forget samples called members", "train (forget)", "mia_member_rate",
     100.0, False),
    (("mia", "forget_auc"), "MIA: forget-vs-unseen AUC (0.5 = chance)", "train (forget)", "mia_auc", 1.0, None),
    (("mia", "forget_auc_distance"), "MIA: distance of that AUC from chance, abs(AUC − 0.5)", "train (forget)",
     "mia_auc_distance", 1.0, False),
    (("mia", "attack_auc_cv"), "MIA: member-vs-non-member attack AUC", "train (retain)", "mia_attack_auc", 1.0,
     None),
]
_CONSISTENCY_ROW = (("consistency", "mean"), "Representation consistency (mean cosine)", "train (retain)",
                    "consistency", 1.0, True)

# Keys never published as hyperparameters: anything that could lead back to the forgotten samples (seeds,
# ids, salts), credentials, and local paths.
_PRIVATE_KEY = re.compile(
    r"seed|indices|(^|_)ids?(_|$)|salt|token|^forget_(k|classes|set)|(^|_)(dir|path|file|run_name)(_|$)"
    r"|^hub_|^push_to_hub|^report_to|^logging_", re.IGNORECASE,
)
_TRAINING_ARGUMENT_KEYS = {"learning_rate", "weight_decay", "per_device_train_batch_size", "max_steps",
                           "num_train_epochs"}


def write_model_card(
    output_dir: str | os.PathLike,
    method: str,
    results: dict,
    run_config: dict,
    anchors_repo: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    *,
    repo_id: str | None = None,
    salt: str | None = None,
) -> Path:
    """Render the model card of ``<output_dir>/<method>`` and write it there as ``README.md``.

    ``results`` is the content of ``results.json`` (or just its ``"methods"`` mapping: ``"before"`` and
    ``method`` -> evaluation dicts); ``run_config`` the run configuration recorded in it. ``anchors_repo``,
    ``base_model`` and ``dataset`` are Hub ids to link (defaults: taken from ``run_config`` when they are Hub
    ids); ``repo_id`` is where the model will live (for the usage snippet). Also writes the public
    ``deletion_receipt.json`` next to the card; the fingerprint's salt is ``salt`` or the private
    ``<output_dir>/deletion_salt.txt`` (created with a random salt if missing). A LoRA adapter folder
    (:func:`hf_structguard.lora.save_model`) gets an adapter card: ``base_model`` is then the model the
    adapter loads on. Returns the card's path.
    """
    output_dir = Path(output_dir)
    model_dir = output_dir / method
    model_config, adapter = read_saved_model(model_dir)
    methods = results.get("methods", results)
    if method not in methods:
        raise ValueError(f"results have no entry for method {method!r} (found: {sorted(methods)}).")
    receipt = receipt_for_run(output_dir, method, salt, forget_accuracy=methods[method].get("A_f"))
    card = render_model_card(
        method, methods, run_config, receipt, model_config=model_config, adapter=adapter,
        anchors_repo=anchors_repo, base_model=base_model, dataset=dataset, repo_id=repo_id,
    )
    path = model_dir / CARD_FILE
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(path)
    logger.info("Wrote the model card %s", path)
    return path


def render_model_card(
    method: str,
    methods: dict,
    run_config: dict,
    receipt: DeletionReceipt,
    *,
    model_config: dict | None = None,
    adapter: dict | None = None,
    anchors_repo: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """The :class:`~huggingface_hub.ModelCard` of ``method``'s model (see :func:`write_model_card`); ``adapter``
    (from :func:`read_saved_model`) renders the card of a LoRA adapter."""
    after, before = methods[method], _before(methods)
    model_config = model_config or {}
    data_config = run_config.get("data") or {}
    model_args = run_config.get("model") or {}
    anchor_args = run_config.get("anchors") or {}
    base_model = _hub_id(base_model) if base_model else _hub_id(model_args.get("model_name_or_path"))
    if base_model is None and adapter:
        base_model = _hub_id(adapter["base_model_name_or_path"])
    dataset = _hub_id(dataset) if dataset else _hub_id(data_config.get("dataset"))
    anchors_repo = _hub_id(anchors_repo) if anchors_repo else _hub_id(anchor_args.get("anchors"))
    dataset_type = dataset or ("sklearn-digits" if not data_config.get("dataset") else "local")
    dataset_source = run_config.get("dataset_source") or dataset_type
    if dataset_type == "local":  # never print a local path
        dataset_source = f"a local dataset (`{Path(str(data_config['dataset'])).name}`)"
    model_name = (repo_id.split("/")[-1] if repo_id else
                  f"{model_config.get('backbone', 'model')}-{dataset_type.split('/')[-1]}-{method}-k{receipt.k}")

    description, retain_free = method_facts(method)
    rows = _metric_rows(after, before)
    eval_results = []
    for row in rows:
        for value, suffix in ((row["after"], ""), (row["before"], " (Before)")):
            if value is not None:
                eval_results.append(EvalResult(
                    task_type="image-classification", task_name="Image Classification",
                    dataset_type=dataset_type, dataset_name=dataset or dataset_source, dataset_split=row["split"],
                    metric_type=row["type"], metric_name=row["label"] + suffix, metric_value=round(value, 4),
                ))
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=eval_results,
        base_model=base_model,
        datasets=[d for d in (dataset, anchors_repo) if d] or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-classification",
        tags=["machine-unlearning", "instance-unlearning", method, "timm", "structguard",
              *(["lora", "peft"] if adapter else [])],
    )
    template = resources.files("hf_structguard.model_cards").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_title=model_name,
        method=method,
        method_description=description,
        retain_free=retain_free,
        repo_id=repo_id,
        base_model_id=base_model,
        base_model_text=_describe_source(base_model or model_args.get("model_name_or_path")),
        dataset_id=dataset,
        dataset_source=dataset_source,
        anchors_repo=anchors_repo,
        text_encoder=_text_encoder(anchor_args),
        hub_url=HUB_URL,
        model_config=_model_details(model_config),
        adapter=adapter,
        class_names=_class_names(model_config),
        results_rows=[row for row in rows if row["after"] is not None or row["before"] is not None],
        steps=after.get("steps"),
        stopped_at_zero=after.get("stopped_at_zero"),
        mia=after.get("mia"),
        hyperparameters=_hyperparameters(run_config, method),
        versions=run_config.get("versions") or library_versions(),
        receipt=receipt,
    )


def method_facts(method: str) -> tuple[str, bool]:
    """``(description, retain_free)`` of a method, read from the registry (an unregistered name gets a generic
    line and counts as retain-free)."""
    method_cls = METHOD_REGISTRY.get(method.lower())
    if method_cls is None:
        return f"Unlearning method `{method}`.", True
    return method_cls.description, not method_cls.needs_retain


def read_saved_model(model_dir: str | os.PathLike) -> tuple[dict, dict | None]:
    """``(model config, adapter)`` of a saved model folder: its ``config.json`` and None, or for a LoRA adapter
    the unlearned model's config and ``{"rank", "alpha", "num_layers", "saved_modules", "num_norm_layers",
    "megabytes", "base_model_name_or_path"}``. ValueError when the folder holds neither."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8")), None
    if not is_adapter_folder(model_dir):
        raise ValueError(
            f"{model_dir} has no config.json (nor a LoRA adapter): save the unlearned model there "
            "(save_pretrained / hf_structguard.lora.save_model) first."
        )
    settings = json.loads((model_dir / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    saved = settings.get("modules_to_save") or []
    weights = model_dir / ADAPTER_WEIGHTS_FILE
    adapter = {
        "rank": settings.get("r"),
        "alpha": settings.get("lora_alpha"),
        "num_layers": len(settings.get("target_modules") or []),
        "saved_modules": [name for name in saved if not name.startswith("backbone.")],
        "num_norm_layers": sum(name.startswith("backbone.") for name in saved),
        "megabytes": weights.stat().st_size / 1e6 if weights.is_file() else None,
        "base_model_name_or_path": settings.get("base_model_name_or_path"),
    }
    return json.loads((model_dir / UNLEARNED_CONFIG_FILE).read_text(encoding="utf-8")), adapter


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _before(methods: dict) -> dict:
    for name, metrics in methods.items():
        if name.lower() == "before":
            return metrics
    return {}


def _lookup(metrics: dict, path: tuple[str, ...]):
    if path == ("forget_error",):
        return None if metrics.get("A_f") is None else 100.0 - float(metrics["A_f"])
    value = metrics
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _metric_rows(after: dict, before: dict) -> list[dict]:
    rows = []
    for path, label, split, metric_type, scale, higher in (
        _ACCURACY_ROWS + _RETRIEVAL_ROWS + [_CONSISTENCY_ROW] + _MIA_ROWS
    ):
        values = [_lookup(m, path) for m in (after, before)]
        values = [None if v is None else v * scale for v in values]
        if values[0] is None and values[1] is None:
            continue
        better = {True: "↑", False: "↓", None: ""}[higher]
        rows.append({"label": label, "split": split, "type": metric_type, "after": values[0],
                     "before": values[1], "better": better})
    return rows


def _hub_id(value: str | None) -> str | None:
    """``value`` as a Hub repo id (``hf-hub:`` prefix removed), or None for local paths and timm names."""
    if not value:
        return None
    value = str(value)
    if value.startswith("hf-hub:"):
        value = value[len("hf-hub:"):]
    elif ":" in value or os.path.exists(value):
        return None
    return value if re.fullmatch(r"[\w.-]+/[\w.-]+", value) else None


def _describe_source(value: str | None) -> str:
    """Readable base-model description that never prints a local path."""
    if not value:
        return "a classifier trained by hf-structguard on the dataset (no pretrained checkpoint given)"
    hub_id = _hub_id(value)
    if hub_id:
        return f"[{hub_id}]({HUB_URL}/{hub_id})"
    if value.startswith("local-dir:") or os.path.exists(value):
        return f"a local checkpoint (`{Path(value.partition('local-dir:')[2] or value).name}`)"
    return f"timm `{value}`"


def _text_encoder(anchor_args: dict) -> str | None:
    metadata = anchor_args.get("metadata") or {}
    encoder = metadata.get("encoder") or anchor_args.get("text_encoder")
    return str(encoder) if encoder else None


def _model_details(config: dict) -> dict:
    keys = ("backbone", "image_size", "mean", "std", "num_features", "projector_dim", "anchor_dim",
            "classify_through_projector", "cifar_stem")
    return {key: config[key] for key in keys if key in config}


def _class_names(config: dict) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=lambda k: int(k))]


def _public(key: str, value) -> bool:
    """Whether a config entry may be published: not private by name, not empty, not a local path."""
    if _PRIVATE_KEY.search(key) or value in (None, "", "None", [], {}) or (key == "max_steps" and value == -1):
        return False
    return not (isinstance(value, str) and (value.startswith(("/", "~", "./", "../"))
                                            or re.match(r"^[A-Za-z]:\\", value)))


def _flatten(prefix: str, values: dict) -> list[tuple[str, str]]:
    items = []
    for key, value in values.items():
        if not _public(str(key), value):
            continue
        if isinstance(value, dict):
            items.extend(_flatten(f"{prefix}{key}.", value))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            items.append((f"{prefix}{key}", text if len(text) <= 120 else text[:117] + "..."))
    return items


def _hyperparameters(run_config: dict, method: str) -> list[tuple[str, str]]:
    """Public hyperparameters: the method's unlearning config, the probe and the anchor settings."""
    unlearning = (run_config.get("unlearning") or {}).get(method) or {}
    try:
        from transformers import TrainingArguments

        generic = set(TrainingArguments.__dataclass_fields__) - _TRAINING_ARGUMENT_KEYS
    except ImportError:
        generic = set()
    generic |= {"train_batch_size", "eval_batch_size"}  # properties added by TrainingArguments.to_sanitized_dict
    unlearning = {key: value for key, value in unlearning.items() if key not in generic}
    anchors = {key: value for key, value in (run_config.get("anchors") or {}).items()
               if key in ("text_encoder", "anchor_join", "anchors_per_class")}
    return (_flatten("", unlearning) + _flatten("probes.", run_config.get("probes") or {})
            + _flatten("anchors.", anchors))
