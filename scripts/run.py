"""Forget k training images of a classifier with StructGuard (or a baseline), evaluate, and publish.

    accelerate launch scripts/run.py                       # the embedded default, offline
    accelerate launch scripts/run.py --config run.yaml     # options from a YAML/JSON file (CLI wins)
    accelerate launch scripts/run.py --methods structguard l2ul adv --forget_k 64
    python scripts/run.py --help                           # every option
    accelerate launch scripts/run.py --resume_from_checkpoint true   # continue an interrupted run

Bad input (an option, a path, a model or anchor id) stops with one line, ``error: ...``, and exit code 2,
before anything is written. Heavy modules are imported after the arguments are parsed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from hf_structguard.arguments import ARGUMENT_CLASSES, DEFAULT_OUTPUT_DIR, SCRIPT_DEFAULTS, ScriptHelpFormatter
from hf_structguard.errors import UserInputError, option_errors, run_cli


def config_file_tokens(argv: list[str]) -> list[str]:
    """Turn ``--config FILE`` into CLI tokens placed before the real ones, so the command line wins."""
    if "--config" not in argv:
        return argv
    position = argv.index("--config")
    if position + 1 >= len(argv):
        raise UserInputError("--config needs a path to a YAML or JSON file")
    path = Path(argv[position + 1])
    if not path.is_file():
        raise UserInputError(f"--config {path}: no such file")
    try:
        options = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as error:
        raise UserInputError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({error})")
    if not isinstance(options, dict):
        raise UserInputError(f"--config {path}: must hold a mapping of option names to values")
    tokens: list[str] = []
    for key, value in options.items():
        tokens.append(f"--{key}")
        if isinstance(value, list):
            tokens.extend(str(v) for v in value)
        elif value is not None:
            tokens.append(str(value))
    return tokens + argv[:position] + argv[position + 2 :]


def main(argv: list[str] | None = None) -> dict:
    """Parse the options and run; raises :class:`UserInputError` for bad input (``run_cli`` prints it)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=__doc__, formatter_class=ScriptHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML or JSON file of options; command-line options override it.")
    parser.set_defaults(output_dir=DEFAULT_OUTPUT_DIR, **SCRIPT_DEFAULTS)
    with option_errors():  # the options' own checks (UnlearningConfig.__post_init__ and co.)
        *arguments, _ = parser.parse_args_into_dataclasses(args=config_file_tokens(argv))
    data_args, model_args, anchor_args, run_args, config = arguments
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hf_structguard.pipeline import publish_run, run_pipeline  # heavy: after --help and argument errors

    results = run_pipeline(data_args, model_args, anchor_args, run_args, config)
    if config.push_to_hub:
        publish_run(config.output_dir, run_args.methods or [config.method], config, run_args)
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
