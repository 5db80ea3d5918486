"""Sequential deletion requests: unlearn request 1, then request 2 from its result, and so on.

    accelerate launch scripts/sequential.py --num_requests 4 --request_k 16     # embedded default, 4 x 16
    accelerate launch scripts/sequential.py --forget_ids_files a.json b.json c.json --method l2ul
    accelerate launch scripts/sequential.py --num_requests 3 --request_k 8 --peft lora
    python scripts/sequential.py --help                                          # every option

Takes every option of scripts/run.py (one method) plus the sequence options; see hf_structguard.sequential.
``--resume_from_checkpoint true`` continues an interrupted sequence. Bad input stops with one line
(``error: ...``, exit code 2) before anything is written.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

from hf_structguard.arguments import ARGUMENT_CLASSES, SCRIPT_DEFAULTS, ScriptHelpFormatter, SequentialArguments
from hf_structguard.errors import option_errors, run_cli

DEFAULT_OUTPUT_DIR = "outputs/sequential"


def main(argv: list[str] | None = None) -> dict:
    """Parse the options and run the sequence; raises :class:`UserInputError` for bad input (``run_cli`` prints it)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((*ARGUMENT_CLASSES, SequentialArguments), description=__doc__, formatter_class=ScriptHelpFormatter)
    parser.set_defaults(output_dir=DEFAULT_OUTPUT_DIR, **SCRIPT_DEFAULTS)
    with option_errors():  # the options' own checks (SequentialArguments.__post_init__ and co.)
        data_args, model_args, anchor_args, run_args, config, seq_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hf_structguard.pipeline import publish_run  # heavy: after --help and argument errors
    from hf_structguard.sequential import run_sequential

    results = run_sequential(data_args, model_args, anchor_args, run_args, seq_args, config)
    if config.push_to_hub:
        publish_run(config.output_dir, run_args.methods or [config.method], config, run_args)
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
