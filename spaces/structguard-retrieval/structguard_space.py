"""What the retrieval Space computes, without any UI: loading a run, cached gallery embeddings, top-k queries
and anchor affinity profiles. ``app.py`` wraps it in a Gradio page.

A run folder is the output of ``scripts/run.py`` (see the "Run output folder layout" in the project's
interface notes): ``results.json``, ``before/``, one folder per unlearning method, ``anchors/`` and the private
``forget_set.json``. Every part can be overridden (Hub ids or local paths), so the Space also works on
published models.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_structguard.anchors import AnchorSet
from hf_structguard.data import images_to_tensor, load_image_data, read_indices_file
from hf_structguard.evaluation import predict, retrieve
from hf_structguard.modeling import build_model
from hf_structguard.structure import AnchorSpace

TOP_K = 5
DISPLAY_SIZE = 112  # small images (digits 8x8, CIFAR 32x32) are upscaled (nearest) to at least this size
QUERY_SOURCES = ("Retained", "Forgotten", "Upload")
DEFAULT_GALLERY_SIZE = 10_000
EMBED_CHUNK = 512
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class LoadError(ValueError):
    """A model, dataset, forget set or anchor set that cannot be loaded; the message says what to fix."""


@dataclass
class SpaceSources:
    """Where the Space reads from: a run folder, and optional overrides of its parts.

    ``before_model``/``unlearned_model``: a local folder or a Hub repo id of a saved StructGuard model.
    ``dataset``: a Hub id or local folder (``"digits"`` = the embedded default); default: the run's dataset.
    ``forget_ids``: a file of training-row ids (JSON list, forget-set JSON or one id per line).
    ``anchors``: a saved AnchorSet (folder or Hub repo id). ``gallery_size``: at most this many retained
    training images form the gallery (a seeded subsample; ``None`` or 0 = all of them).
    """

    run_dir: Path | None = None
    before_model: str | None = None
    unlearned_model: str | None = None
    method: str | None = None
    dataset: str | None = None
    forget_ids: str | None = None
    anchors: str | None = None
    gallery_size: int | None = DEFAULT_GALLERY_SIZE


@dataclass
class QueryResult:
    """Everything one query shows: the query, a top-k gallery and an anchor profile per model."""

    query_image: Image.Image
    description: str
    galleries: dict[str, list[tuple[Image.Image, str]]]  # model name -> [(image, caption)] best first
    affinities: dict[str, np.ndarray] | None  # model name -> (b,) cosine affinities to the anchors
    seconds: float


def display_image(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """RGB copy of ``image``, upscaled by an integer factor (nearest neighbour) to at least ``size`` pixels."""
    image = image.convert("RGB")
    factor = max(1, math.ceil(size / max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


@torch.no_grad()
def anchor_affinities(model, features: torch.Tensor, space: AnchorSpace) -> torch.Tensor:
    """Cosine affinities ``(N, b)`` of pooled features ``g(x)`` to the anchors, read as during unlearning
    (docs/concepts.md#retrieval): through the model's projector (eval mode) when it has one, else ``norm(M(g(x)))·Aᵀ``.
    """
    was_training = model.training
    model.eval()
    try:
        return space.model_structure(model, features).float()
    finally:
        model.train(was_training)


def _local_or_hub(source: str) -> str:
    """``source`` if it is an existing folder or a Hub repo id; LoadError for a missing folder."""
    path = Path(source)
    if path.is_dir() or (not path.exists() and _REPO_ID.match(source) and not source.startswith((".", "/"))):
        return source
    raise LoadError(f"folder {source} does not exist")


class RetrievalBackend:
    """A loaded run: dataset, forget set, retain gallery, models (loaded lazily, gallery embedded once each)
    and anchors. Construction never raises: what could not be loaded is listed in :attr:`problems`.
    """

    def __init__(self, sources: SpaceSources):
        self.sources = sources
        self.problems: list[str] = []
        self.data = None
        self.forget_rows = np.zeros(0, dtype=np.int64)
        self.gallery_rows = np.zeros(0, dtype=np.int64)
        self.train_labels = self.gallery_labels = np.zeros(0, dtype=np.int64)
        self.anchors: AnchorSet | None = None
        self._models: dict[str, object] = {}  # name -> model, or the LoadError it raised
        self._gallery_embeddings: dict[str, torch.Tensor] = {}
        self._spaces: dict[str, AnchorSpace] = {}
        self._lock = threading.Lock()

        self.results = self._attempt(self._read_results)
        self.model_sources = self._model_sources()
        self.methods = [name for name in self.model_sources if name != "before"]
        self.default_method = self._default_method()
        self.data = self._attempt(self._load_data)
        if self.data is not None:
            self.train_labels = self.data.labels("train")
            forget = self._attempt(self._read_forget_rows)
            self.forget_rows = self.forget_rows if forget is None else forget
            self._attempt(self._choose_gallery)
            self._attempt(self._load_anchors)
            if len(self.gallery_rows):
                self._load_models(["before"] + ([self.default_method] if self.default_method else []))

    # ---- loading -------------------------------------------------------------------------------------
    def _attempt(self, load):
        try:
            return load()
        except LoadError as error:
            self.problems.append(str(error))
            return None

    def _run_path(self, name: str) -> Path | None:
        return None if self.sources.run_dir is None else Path(self.sources.run_dir) / name

    def _read_results(self) -> dict | None:
        run_dir = self.sources.run_dir
        if run_dir is None:
            return None
        if not Path(run_dir).is_dir():
            overridden = self.sources.before_model and self.sources.unlearned_model
            if overridden:
                return None
            raise LoadError(
                f"Run folder {run_dir} does not exist. Create it with `python scripts/run.py` (the embedded "
                "default run), or point the app at a run with --run-dir / RUN_DIR, or at models with "
                "BEFORE_MODEL and UNLEARNED_MODEL."
            )
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise LoadError(f"{path} is missing: summary metrics are unavailable (is {run_dir} a finished run?).")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LoadError(f"{path} is not valid JSON ({error}); re-run the pipeline to rewrite it.") from error

    def _model_sources(self) -> dict[str, str | None]:
        """Model name -> where to load it from ("before" first, then the unlearned models)."""
        before = self.sources.before_model or (str(self._run_path("before")) if self.sources.run_dir else None)
        sources: dict[str, str | None] = {"before": before}
        if self.sources.unlearned_model:
            sources[self.sources.method or "unlearned"] = self.sources.unlearned_model
            return sources
        names = [name for name in (self.results or {}).get("methods", {}) if name != "before"]
        run_dir = self.sources.run_dir
        if run_dir is not None and Path(run_dir).is_dir():
            for folder in sorted(Path(run_dir).iterdir()):
                if (folder / "config.json").is_file() and folder.name != "before":
                    names.append(folder.name)
        for name in dict.fromkeys(names):
            sources[name] = str(self._run_path(name))
        return sources

    def _default_method(self) -> str | None:
        if self.sources.method and self.sources.method in self.methods:
            return self.sources.method
        if self.sources.method:
            self.problems.append(
                f"Method {self.sources.method!r} is not in the run (found: {', '.join(self.methods) or 'none'})."
            )
        if not self.methods:
            if self.sources.run_dir is not None and Path(self.sources.run_dir).is_dir():
                self.problems.append(
                    f"No unlearned model in {self.sources.run_dir}: expected a folder per method (e.g. structguard/), "
                    "or set UNLEARNED_MODEL."
                )
            return None
        return "structguard" if "structguard" in self.methods else self.methods[0]

    def _load_data(self):
        run_data = ((self.results or {}).get("run_config") or {}).get("data") or {}
        name, kwargs = self.sources.dataset, {}
        if name is None:
            name = run_data.get("dataset")
            kwargs = {key: run_data[key] for key in ("image_column", "label_column", "train_split", "test_split") if run_data.get(key)}
            if run_data.get("dataset_config"):
                kwargs["name"] = run_data["dataset_config"]
        if name in ("", "digits"):
            name = None
        try:
            data = load_image_data(name, **kwargs)
        except Exception as error:  # noqa: BLE001 - any loader failure is reported in the page
            raise LoadError(
                f"Cannot load the dataset {name or 'digits (embedded default)'}: {error}. Set DATASET / --dataset "
                "to a Hub id or local folder of the dataset the models were trained on."
            ) from error
        run_names = ((self.results or {}).get("run_config") or {}).get("class_names")
        if run_names and list(run_names) != list(data.class_names):
            self.problems.append(
                f"The dataset's classes {data.class_names} differ from the run's {run_names}; results may not match."
            )
        return data

    def _read_forget_rows(self) -> np.ndarray:
        """Forgotten train-row ids from FORGET_IDS or the run's forget_set.json (LoadError when there is none)."""
        num_train = len(self.data.train)
        source = self.sources.forget_ids or self._run_path("forget_set.json")
        if source is None or not Path(source).is_file():
            raise LoadError(
                f"No forget set ({source or 'no run folder'}): 'Forgotten' queries are unavailable and the gallery "
                "is the whole train split. Set FORGET_IDS / --forget-ids to a file of training-row ids."
            )
        try:
            forget = np.asarray(read_indices_file(source), dtype=np.int64)
        except (OSError, ValueError) as error:
            raise LoadError(f"Cannot read the forget set {source}: {error}") from error
        bad = forget[(forget < 0) | (forget >= num_train)]
        if bad.size:
            raise LoadError(
                f"Forget set {source} has ids {bad[:5].tolist()} outside the train split (0..{num_train - 1}): "
                "it belongs to another dataset."
            )
        return forget

    def _choose_gallery(self) -> None:
        """The retain gallery: train rows not in the forget set, at most ``gallery_size`` of them (seeded)."""
        retain = np.setdiff1d(np.arange(len(self.data.train), dtype=np.int64), self.forget_rows)
        size = self.sources.gallery_size
        if size and size < len(retain):
            retain = np.sort(retain[np.random.default_rng(0).permutation(len(retain))[:size]])
        if len(retain) < 2:
            raise LoadError(f"The retain gallery has {len(retain)} images: nothing to retrieve from.")
        self.gallery_rows = retain
        self.gallery_labels = self.train_labels[retain]

    def _load_anchors(self) -> None:
        source = self.sources.anchors or self._run_path("anchors")
        if source is None or (not self.sources.anchors and not Path(source).is_dir()):
            self.problems.append(f"No anchor set ({source or 'no run folder'}): the affinity profile is unavailable.")
            return
        try:
            self.anchors = AnchorSet.load(str(source)).validate(self.data.class_names)
        except Exception as error:  # noqa: BLE001 - reported in the page
            raise LoadError(f"Cannot load the anchor set {source}: {error}") from error

    def _load_models(self, names: list[str]) -> None:
        """Load models and embed the gallery with each of them (one pass over the images per image size)."""
        fresh = {}
        for name in names:
            if name in self._models:
                continue
            try:
                fresh[name] = self._build(name)
            except LoadError as error:
                self._models[name] = error
                self.problems.append(str(error))
        if fresh:
            for name, embeddings in self._embed_gallery(fresh).items():
                self._gallery_embeddings[name] = embeddings
            self._models.update(fresh)

    def _build(self, name: str):
        what = "Before" if name == "before" else f"unlearned ({name})"
        source = self.model_sources.get(name)
        if source is None:
            raise LoadError(f"No {what} model: set --run-dir / RUN_DIR or BEFORE_MODEL.")
        try:
            model = build_model(
                _local_or_hub(source), num_labels=self.data.num_classes, class_names=self.data.class_names
            )
        except Exception as error:  # noqa: BLE001 - reported in the page, naming the model and its source
            raise LoadError(f"Cannot load the {what} model from {source}: {error}") from error
        return model.eval()

    def _embed_gallery(self, models: dict[str, object]) -> dict[str, torch.Tensor]:
        sizes = {name: int(model.config.image_size) for name, model in models.items()}
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in models}
        rows = self.gallery_rows.tolist()
        for start in range(0, len(rows), EMBED_CHUNK):
            for size in set(sizes.values()):
                images, _ = self.data.tensors("train", rows[start : start + EMBED_CHUNK], size)
                for name in (n for n in models if sizes[n] == size):
                    chunks[name].append(predict(models[name], images)[1])
        return {name: torch.cat(parts) if parts else torch.zeros(0) for name, parts in chunks.items()}

    def model(self, name: str):
        """The loaded model called ``name`` (loading it and embedding the gallery on first use)."""
        if self.data is None or not len(self.gallery_rows):
            raise LoadError("Nothing to query: " + " ".join(self.problems))
        if not name:
            raise LoadError("No unlearned model to compare with: set --run-dir / RUN_DIR or UNLEARNED_MODEL.")
        if name not in self.model_sources:
            raise LoadError(f"Unknown model {name!r}; choose one of {', '.join(self.methods) or 'none'}.")
        with self._lock:
            self._load_models([name])
        loaded = self._models[name]
        if isinstance(loaded, LoadError):
            raise loaded
        return loaded

    def _anchor_space(self, name: str) -> AnchorSpace:
        """The anchors and the model's fixed feature map (built once per model)."""
        if name not in self._spaces:
            config = self._models[name].config
            self._spaces[name] = AnchorSpace(self.anchors.embeddings, config.num_features, config.feature_map_seed)
        return self._spaces[name]

    # ---- what the page shows --------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names) if self.data is not None else []

    def num_queries(self, source: str) -> int:
        return {"Retained": len(self.gallery_rows), "Forgotten": len(self.forget_rows)}.get(source, 0)

    def status_markdown(self) -> str:
        lines = []
        if self.data is not None:
            lines.append(
                f"**Dataset:** {self.data.source} · **forget set:** {len(self.forget_rows)} training images · "
                f"**retain gallery:** {len(self.gallery_rows)} images"
                + (f" · **anchors:** {self.anchors.embeddings.shape[0]}" if self.anchors is not None else "")
            )
        lines += [f"⚠️ {problem}" for problem in self.problems]
        return "\n\n".join(lines)

    def summary_markdown(self) -> str:
        """The run's metrics from results.json: accuracies and retrieval (retain and forget queries)."""
        methods = (self.results or {}).get("methods")
        if not methods:
            return "_No results.json in the run folder: summary metrics are unavailable._"
        header = (
            "| model | A_test | A_r | A_f | retain R@1 | R@5 | R@10 | mAP | forget R@1 | R@5 | R@10 | mAP |\n"
            "|---|" + "---:|" * 11
        )
        lines = [header]
        for name, metrics in methods.items():
            retrieval = metrics.get("retrieval") or {}
            cells = [metrics.get(key) for key in ("A_test", "A_r", "A_f")]
            for split in ("retain", "forget"):
                cells += [(retrieval.get(split) or {}).get(key) for key in ("R@1", "R@5", "R@10", "mAP")]
            lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cells) + " |")
        forget = (self.results or {}).get("forget_set") or {}
        note = (
            f"\n\nForget set: k = {forget.get('k', '?')} ({forget.get('mode', '?')}). Accuracies in %; retrieval "
            "ranks the retain gallery by cosine similarity of pooled features (higher is better for retain "
            "queries, lower for forget queries)."
        )
        return "\n".join(lines) + note

    def anchor_labels(self) -> list[tuple[str, str]]:
        """``(class, description)`` of each anchor row (empty description when the anchor set has none)."""
        descriptions = self.anchors.descriptions or [""] * len(self.anchors)
        return list(zip(self.anchors.class_names, descriptions))

    # ---- queries -------------------------------------------------------------------------------------
    def query(self, source: str, index: int | None, upload: Image.Image | None, method: str) -> QueryResult:
        """Top-k retrievals from the retain gallery for Before and ``method``, and the anchor profiles."""
        started = time.perf_counter()
        if source not in QUERY_SOURCES:
            raise ValueError(f"query source must be one of {QUERY_SOURCES}, got {source!r}")
        models = {"before": self.model("before"), method: self.model(method)}
        names = self.class_names
        self_position = -1
        if source == "Upload":
            if upload is None:
                raise ValueError("Upload a query image first (or pick a retained or forgotten one).")
            image, label, what = upload, None, "Uploaded image"
        else:
            count = self.num_queries(source)
            if count == 0:
                raise ValueError(f"There are no {source.lower()} images to query in this run.")
            if index is None or not 0 <= int(index) < count:
                raise ValueError(f"Image number must be in 0..{count - 1} for {source.lower()} queries, got {index}.")
            index = int(index)
            rows = self.gallery_rows if source == "Retained" else self.forget_rows
            row = int(rows[index])
            self_position = index if source == "Retained" else -1
            image = self.data.train[row][self.data.image_column]
            label = int(self.train_labels[row])
            what = f"{source} training image (row {row}), class **{names[label]}**"

        inputs = {name: images_to_tensor([image], int(model.config.image_size)) for name, model in models.items()}
        predictions, galleries, features = {}, {}, {}
        for name, model in models.items():
            logits, features[name] = predict(model, inputs[name])
            predictions[name] = int(logits.argmax(dim=1))
            _, top = retrieve(
                features[name], self._gallery_embeddings[name], min(TOP_K, len(self.gallery_rows) - (self_position >= 0)),
                self_index=torch.tensor([self_position]),
            )
            galleries[name] = top[0].tolist()
        reference = label if label is not None else predictions["before"]
        if label is None:
            what += f" (marks compare with the Before model's prediction, **{names[reference]}**)"

        shown = {}
        for name, positions in galleries.items():
            rows = self.gallery_rows[positions]
            pictures = self.data.train.select(rows.tolist())[self.data.image_column]
            shown[name] = [
                (display_image(picture), caption(int(self.gallery_labels[p]), reference, names))
                for picture, p in zip(pictures, positions)
            ]
        verdicts = " · ".join(
            f"{'Before' if name == 'before' else name} predicts **{names[p]}**" for name, p in predictions.items()
        )
        affinities, note = None, ""
        if self.anchors is not None:
            try:
                affinities = {
                    name: anchor_affinities(model, features[name], self._anchor_space(name))[0].numpy()
                    for name, model in models.items()
                }
            except ValueError as error:
                note = f" No affinity profile: {error}."
        return QueryResult(
            query_image=display_image(image),
            description=f"{what}. {verdicts}.{note}",
            galleries=shown,
            affinities=affinities,
            seconds=time.perf_counter() - started,
        )


def caption(label: int, reference: int, names: list[str]) -> str:
    """``✓ same class: <name>`` or ``✗ <name> (other class)``."""
    return f"✓ same class: {names[label]}" if label == reference else f"✗ {names[label]} (other class)"

