"""AnchorSet: class anchors A (rows L2-normalised, float32) with the text behind them and how they were built.

On disk and on the Hub an anchor set is a folder (a dataset repo) holding

* ``anchors.parquet``: columns ``class_name``, ``attributes``, ``description``, ``embedding``;
* ``anchor_metadata.json``: encoder id and revision, join, normalisation, anchors per class, date,
  library version;
* ``README.md``: the dataset card (from ``model_cards/anchor_dataset_card.md``).

``datasets.load_dataset(repo_id, split="train")`` reads it as a plain dataset. No pickles are involved.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserInputError, hub_problem, one_line
from .attributes import describe, load_attributes, match_class_names, normalize_class_name
from .encoders import DEFAULT_ENCODER, TextEncoder, load_text_encoder

logger = logging.getLogger(__name__)

FORMAT = "hf-structguard-anchors"
FORMAT_VERSION = 1
PARQUET_FILE = "anchors.parquet"
METADATA_FILE = "anchor_metadata.json"
CARD_TEMPLATE = "anchor_dataset_card.md"
ANCHORS_PER_CLASS = ("single", "per_attribute", "mean")


def _library_version() -> str:
    try:
        return importlib_metadata.version("hf-structguard")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@dataclass(eq=False, repr=False)
class AnchorSet:
    """Anchors A (rows, d_a) for a classifier's classes.

    ``class_names[i]`` is the class of row ``i``; with several anchors per class a class spans several
    consecutive rows (:attr:`classes` lists each class once, :attr:`class_indices` maps rows to them).
    ``attributes``/``descriptions`` hold, per row, the attributes and the text that was encoded.

    Degenerate dimensions: 1-d anchors are rejected (every cosine between them is ±1, so the structure, the
    cosine affinities to the anchors, cannot tell classes apart); fewer dimensions than classes log a warning
    (at most d anchors are linearly independent, so some classes' affinities are mixtures of others').
    """

    class_names: list[str]
    embeddings: torch.Tensor
    metadata: dict = field(default_factory=dict)
    attributes: list[list[str]] | None = None
    descriptions: list[str] | None = None

    def __post_init__(self):
        self.class_names = [str(c) for c in self.class_names]
        emb = torch.as_tensor(self.embeddings).detach().to("cpu", torch.float32)
        if emb.ndim != 2 or emb.shape[0] != len(self.class_names):
            raise ValueError(
                f"embeddings must have shape ({len(self.class_names)}, d) for {len(self.class_names)} "
                f"class names, got {tuple(emb.shape)}."
            )
        if not torch.isfinite(emb).all() or not torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-3):
            raise ValueError("Anchor embeddings must be finite and L2-normalised (use F.normalize(x, dim=1)).")
        num_classes = len(set(self.class_names))
        if emb.shape[1] == 1 and num_classes > 1:
            raise ValueError(
                "1-dimensional anchors: every cosine between them is +1 or -1, so the structure (affinities to the "
                "anchors) cannot tell the classes apart; encode them with a text encoder of more dimensions."
            )
        if emb.shape[1] < num_classes:
            logger.warning(
                "%d-dimensional anchors for %d classes: at most %d of them are linearly independent, so the "
                "structure cannot separate every class; prefer an encoder with at least as many dimensions as "
                "classes.", emb.shape[1], num_classes, emb.shape[1],
            )
        self.embeddings = emb
        for name in ("attributes", "descriptions"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.class_names):
                raise ValueError(f"{name} has {len(value)} entries for {len(self.class_names)} anchors.")
        self.metadata = dict(self.metadata)

    @property
    def dim(self) -> int:
        """Anchor dimension d_a."""
        return int(self.embeddings.shape[1])

    @property
    def classes(self) -> list[str]:
        """Each class once, in row order."""
        return list(dict.fromkeys(self.class_names))

    @property
    def class_indices(self) -> torch.Tensor:
        """(rows,) int64: the position in :attr:`classes` of each row's class."""
        position = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([position[c] for c in self.class_names], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"AnchorSet(classes={len(self.classes)}, anchors={len(self)}, dim={self.dim}, "
                f"encoder={self.metadata.get('encoder')!r})")

    # ----------------------------------------------------------------------------------------- checks
    def validate(self, class_names: Sequence[str], dim: int | None = None) -> "AnchorSet":
        """Check against a dataset's classes (and the expected anchor dimension); return it in that order.

        Names are matched forgivingly (case, ``_`` vs space, whitespace; see
        :func:`~hf_structguard.anchors.attributes.normalize_class_name`). When all classes match but the
        order differs, the rows are reordered to the dataset's class order (rows of one class keep
        their order) and renamed to the dataset's spelling. Missing or extra classes, or a different
        dimension, raise a ``ValueError`` that names them.
        """
        if dim is not None and int(dim) != self.dim:
            raise ValueError(
                f"Anchor dimension mismatch: the anchors have d_a={self.dim} "
                f"(encoder {self.metadata.get('encoder')!r}) but {int(dim)} is expected."
            )
        class_names = [str(c) for c in class_names]
        match_class_names(self.class_names, class_names, what="anchor set")
        key_to_name = {normalize_class_name(c): c for c in class_names}
        rank = {normalize_class_name(c): i for i, c in enumerate(class_names)}
        order = sorted(range(len(self)), key=lambda i: rank[normalize_class_name(self.class_names[i])])
        if order == list(range(len(self))) and self.class_names == [
            key_to_name[normalize_class_name(c)] for c in self.class_names
        ]:
            return self
        pick = lambda values: None if values is None else [values[i] for i in order]  # noqa: E731
        return AnchorSet(
            class_names=[key_to_name[normalize_class_name(self.class_names[i])] for i in order],
            embeddings=self.embeddings[order],
            metadata=self.metadata,
            attributes=pick(self.attributes),
            descriptions=pick(self.descriptions),
        )

    # ------------------------------------------------------------------------------- datasets bridge
    def to_dataset(self):
        """A ``datasets.Dataset`` (class_name, attributes, description, embedding); metadata as JSON in
        ``info.description``."""
        import datasets

        features = datasets.Features({
            "class_name": datasets.Value("string"),
            "attributes": datasets.List(datasets.Value("string")),
            "description": datasets.Value("string"),
            "embedding": datasets.List(datasets.Value("float32"), length=self.dim),
        })
        return datasets.Dataset.from_dict(
            {
                "class_name": self.class_names,
                "attributes": self.attributes or [[] for _ in self.class_names],
                "description": self.descriptions or ["" for _ in self.class_names],
                "embedding": list(self.embeddings.numpy()),
            },
            info=datasets.DatasetInfo(description=json.dumps(self.metadata), features=features),
        )

    @classmethod
    def from_dataset(cls, dataset, metadata: Mapping | None = None) -> "AnchorSet":
        """Inverse of :meth:`to_dataset`; metadata from ``metadata`` or the dataset's info description."""
        missing = {"class_name", "embedding"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"An anchor dataset needs the columns {sorted(missing)}; it has {dataset.column_names}.")
        if metadata is None:
            try:
                metadata = json.loads(dataset.info.description or "{}")
            except json.JSONDecodeError:
                metadata = {}
        columns = set(dataset.column_names)
        embeddings = np.asarray(dataset.with_format("numpy")[:]["embedding"], dtype=np.float32)
        return cls(
            class_names=list(dataset["class_name"]),
            embeddings=torch.from_numpy(np.ascontiguousarray(embeddings)),
            metadata=dict(metadata),
            attributes=[list(a) for a in dataset["attributes"]] if "attributes" in columns else None,
            descriptions=list(dataset["description"]) if "description" in columns else None,
        )

    # ------------------------------------------------------------------------------ save / load / hub
    def card(self, repo_id: str | None = None):
        """The dataset card (``huggingface_hub.DatasetCard``) rendered from the package template."""
        from huggingface_hub import DatasetCard, DatasetCardData

        card_data = DatasetCardData(
            pretty_name=f"StructGuard anchors ({self.metadata.get('encoder', 'text encoder')})",
            size_categories="n<1K" if len(self) < 1000 else "1K<n<10K",
            tags=["hf-structguard", "structguard", "machine-unlearning", "text-embeddings", "anchors"],
            configs=[{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET_FILE}]}],
        )
        rows = [
            {"class_name": c, "description": d}
            for c, d in zip(self.class_names, self.descriptions or [""] * len(self))
        ]
        template = resources.files("hf_structguard.model_cards") / CARD_TEMPLATE
        return DatasetCard.from_template(
            card_data,
            template_str=template.read_text(encoding="utf-8"),
            repo_id=repo_id or "path/to/anchors",
            metadata=self.metadata,
            num_classes=len(self.classes),
            num_anchors=len(self),
            dim=self.dim,
            rows=rows,
        )

    def save(self, directory: str | Path, *, repo_id: str | None = None) -> Path:
        """Write ``anchors.parquet``, ``anchor_metadata.json`` and ``README.md`` into ``directory``."""
        import pyarrow.parquet as pq

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_dataset().data.table, directory / PARQUET_FILE)
        (directory / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2) + "\n", encoding="utf-8")
        self.card(repo_id).save(directory / "README.md")
        return directory

    @classmethod
    def load(
        cls,
        dir_or_repo_id: str | Path,
        revision: str | None = None,
        *,
        class_names: Sequence[str] | None = None,
        dim: int | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
    ) -> "AnchorSet":
        """Load from a local folder or a Hub dataset repo (``snapshot_download``; ``endpoint`` defaults to
        ``huggingface_hub.constants.ENDPOINT``). With ``class_names``/``dim`` the result is
        :meth:`validate`-d (and reordered to the dataset's class order)."""
        import datasets
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(dir_or_repo_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(dir_or_repo_id)):
                raise UserInputError(f"no such anchor folder {dir_or_repo_id} (nor a Hub dataset id)")
            try:
                folder = Path(snapshot_download(
                    str(dir_or_repo_id), repo_type="dataset", revision=revision, token=token, endpoint=endpoint,
                    allow_patterns=["*.parquet", METADATA_FILE],
                ))
            except OSError as error:
                raise UserInputError(f"no local folder {dir_or_repo_id}, and as a Hub dataset: "
                                     f"{hub_problem(error) or one_line(error)}") from error
        files = [folder / PARQUET_FILE] if (folder / PARQUET_FILE).is_file() else sorted(folder.rglob("*.parquet"))
        if not files:
            raise ValueError(f"No anchor parquet file in {str(dir_or_repo_id)!r}; expected {PARQUET_FILE}.")
        table = pa.concat_tables([pq.read_table(f) for f in files])
        meta_path = folder / METADATA_FILE
        metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
        anchors = cls.from_dataset(datasets.Dataset(table), metadata)
        if class_names is not None:
            return anchors.validate(class_names, dim)
        if dim is not None:
            anchors.validate(anchors.classes, dim)
        return anchors

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload StructGuard anchors",
        create_pr: bool = False,
        endpoint: str | None = None,
    ):
        """Create (if needed) the dataset repo ``repo_id`` and upload the anchors and their card in one
        commit. ``endpoint`` defaults to ``huggingface_hub.constants.ENDPOINT``. Returns the ``CommitInfo``."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save(tmp, repo_id=repo_id)
            return api.upload_folder(
                repo_id=repo_id, repo_type="dataset", folder_path=tmp, revision=revision,
                commit_message=commit_message, create_pr=create_pr,
            )


def build_anchor_set(
    attributes: Mapping[str, Sequence[str]] | str | Path,
    encoder: str | TextEncoder = DEFAULT_ENCODER,
    *,
    class_names: Sequence[str] | None = None,
    join: str = "; ",
    anchors_per_class: str = "single",
    encoder_type: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    attributes_source: str | None = None,
) -> AnchorSet:
    """Encode class attributes into anchors.

    ``attributes``: a mapping or any source :func:`load_attributes` accepts (e.g. ``"shipped:cifar10"``),
    checked against ``class_names`` when given (rows then follow the dataset's order and spelling).
    ``anchors_per_class``: ``"single"`` encodes the attributes joined with ``join`` (the reference
    behaviour, one row per class); ``"per_attribute"`` encodes each attribute as its own row;
    ``"mean"`` averages the per-attribute embeddings of a class and renormalises (one row per class).
    """
    if anchors_per_class not in ANCHORS_PER_CLASS:
        raise ValueError(f"anchors_per_class must be one of {ANCHORS_PER_CLASS}, got {anchors_per_class!r}.")
    if not isinstance(join, str):
        raise ValueError(f"join must be a string, got {type(join).__name__}.")
    if attributes_source is None and isinstance(attributes, (str, Path)):
        attributes_source = str(attributes)
    attributes = load_attributes(attributes, class_names=class_names)
    if isinstance(encoder, str):
        encoder = load_text_encoder(encoder, encoder_type=encoder_type, device=device)
    elif not isinstance(encoder, TextEncoder):
        raise ValueError(f"encoder must be an encoder id/path or a TextEncoder, got {type(encoder).__name__}.")
    classes = list(attributes)

    if anchors_per_class == "single":
        row_classes = classes
        row_attributes = [attributes[c] for c in classes]
        descriptions = [describe(a, join) for a in row_attributes]
        embeddings = encoder.encode(descriptions, names=row_classes, batch_size=batch_size)
    else:
        flat_classes = [c for c in classes for _ in attributes[c]]
        flat_texts = [a for c in classes for a in attributes[c]]
        flat = encoder.encode(flat_texts, names=flat_classes, batch_size=batch_size)
        if anchors_per_class == "per_attribute":
            row_classes, descriptions, embeddings = flat_classes, flat_texts, flat
            row_attributes = [[t] for t in flat_texts]
        else:
            position = {c: i for i, c in enumerate(classes)}
            index = torch.tensor([position[c] for c in flat_classes])
            sums = torch.zeros(len(classes), flat.shape[1]).index_add_(0, index, flat)
            embeddings = F.normalize(sums, dim=1)
            row_classes = classes
            row_attributes = [attributes[c] for c in classes]
            descriptions = [describe(a, join) for a in row_attributes]

    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **encoder.info(),
        "dim": int(embeddings.shape[1]),
        "join": join,
        "normalization": "l2",
        "anchors_per_class": anchors_per_class,
        "num_classes": len(classes),
        "num_anchors": len(row_classes),
        "attributes_source": attributes_source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "library": "hf-structguard",
        "library_version": _library_version(),
    }
    return AnchorSet(row_classes, embeddings, metadata, row_attributes, descriptions)
