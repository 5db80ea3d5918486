"""Forget k training images of a classifier with StructGuard (or a baseline), evaluate, and publish.

    accelerate launch scripts/run.py                       # the embedded default, offline
    accelerate launch scripts/run.py --config run.yaml     # options from a YAML/JSON file (CLI wins)
    accelerate launch scripts/run.py --methods structguard l2ul adv --forget_k 64
    python scripts/run.py --help                           # every option
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from hf_structguard.pipeline import ARGUMENT_CLASSES, DEFAULT_OUTPUT_DIR, publish_run, run_pipeline


def config_file_tokens(argv: list[str]) -> list[str]:
    """Turn ``--config FILE`` into CLI tokens placed before the real ones, so the command line wins."""
    if "--config" not in argv:
        return argv
    position = argv.index("--config")
    if position + 1 >= len(argv):
        raise SystemExit("--config needs a path to a YAML or JSON file")
    path = Path(argv[position + 1])
    if not path.is_file():
        raise SystemExit(f"--config: no such file: {path}")
    options = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    if not isinstance(options, dict):
        raise SystemExit(f"--config: {path} must hold a mapping of option names to values")
    tokens: list[str] = []
    for key, value in options.items():
        tokens.append(f"--{key}")
        if isinstance(value, list):
            tokens.extend(str(v) for v in value)
        elif value is not None:
            tokens.append(str(value))
    return tokens + argv[:position] + argv[position + 2 :]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=__doc__)
    parser.add_argument("--config", default=None, help="YAML or JSON file of options; command-line options override it.")
    parser.set_defaults(output_dir=DEFAULT_OUTPUT_DIR)
    *arguments, _ = parser.parse_args_into_dataclasses(args=config_file_tokens(argv))
    data_args, model_args, anchor_args, run_args, config = arguments
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run_pipeline(data_args, model_args, anchor_args, run_args, config)
    if config.push_to_hub:
        publish_run(config.output_dir, run_args.methods or [config.method], config, run_args)
    return results


if __name__ == "__main__":
    main()
