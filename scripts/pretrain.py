"""Train a "Before" classifier from scratch with ``transformers.Trainer`` (any timm architecture, optional
CIFAR stem) on any image-classification dataset, ready for ``scripts/run.py --model_name_or_path``.

    # the paper's protocol: CIFAR-stem ResNet-18 on CIFAR-10 (a CUDA machine; ~200 epochs in the paper)
    python scripts/pretrain.py --dataset /path/to/cifar10 --backbone resnet18 --cifar_stem true \\
        --image_size 32 --epochs 200 --output_dir checkpoints/resnet18-cifar-stem
    # tiny, on the embedded digits data (no --dataset)
    python scripts/pretrain.py --backbone resnet10t --image_size 16 --epochs 1 --hflip false --output_dir /tmp/before

Writes the model (``save_pretrained``: config.json + model.safetensors) and ``train_result.json`` (train and
test accuracy and the recipe) to ``--output_dir``; shows a progress bar with the time left. Without
``--image_size`` the images' own size is used. Options: ``python scripts/pretrain.py --help``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_structguard.arguments import ScriptHelpFormatter
from hf_structguard.errors import UserInputError, option_errors, run_cli
from hf_structguard.pretrain import PretrainArguments


@dataclass
class PretrainDataArguments:
    """Which data to train on and where to write the model."""

    output_dir: str = field(metadata={"help": "Folder for the trained model and train_result.json."})
    dataset: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of an image-classification dataset; empty = embedded digits."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    image_column: str | None = field(default=None, metadata={"help": "Image column; detected when empty."})
    label_column: str | None = field(default=None, metadata={"help": "Label column; detected when empty."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    test_split: str = field(default="test", metadata={"help": "Split for the reported test accuracy."})


def main(argv: list[str] | None = None) -> dict:
    """Parse the options and train; raises ``UserInputError`` for bad input (``run_cli`` prints it)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((PretrainDataArguments, PretrainArguments), description=__doc__, formatter_class=ScriptHelpFormatter)
    with option_errors():
        data_args, recipe = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import timm

    from hf_structguard.pipeline import load_data  # heavy: after --help and argument errors
    from hf_structguard.pretrain import pretrain_classifier

    if not timm.is_model(recipe.backbone):
        raise UserInputError(f"--backbone {recipe.backbone}: not a timm architecture (see timm.list_models())")
    data = load_data(data_args)  # the same dataset options as scripts/run.py
    _, metrics = pretrain_classifier(data, recipe, data_args.output_dir)
    metrics["dataset"] = data.source
    print(json.dumps({key: metrics[key] for key in ("train_accuracy", "test_accuracy")}
                     | {"image_size": metrics["recipe"]["image_size"], "output_dir": data_args.output_dir}))
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
