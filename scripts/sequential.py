"""Sequential deletion requests: unlearn request 1, then request 2 from its result, and so on.

    accelerate launch scripts/sequential.py --num_requests 4 --request_k 16     # embedded default, 4 x 16
    accelerate launch scripts/sequential.py --forget_ids_files a.json b.json c.json --method l2ul
    accelerate launch scripts/sequential.py --num_requests 3 --request_k 8 --peft lora
    python scripts/sequential.py --help                                          # every option

Takes every option of scripts/run.py (one method) plus the sequence options; see hf_structguard.sequential.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

from hf_structguard.pipeline import ARGUMENT_CLASSES, publish_run
from hf_structguard.sequential import SequentialArguments, run_sequential

DEFAULT_OUTPUT_DIR = "outputs/sequential"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((*ARGUMENT_CLASSES, SequentialArguments), description=__doc__)
    parser.set_defaults(output_dir=DEFAULT_OUTPUT_DIR)
    data_args, model_args, anchor_args, run_args, config, seq_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run_sequential(data_args, model_args, anchor_args, run_args, seq_args, config)
    if config.push_to_hub:
        publish_run(config.output_dir, run_args.methods or [config.method], config, run_args)
    return results


if __name__ == "__main__":
    main()
