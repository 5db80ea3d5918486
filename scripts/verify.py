"""Verify forgetting against retraining from scratch: every method's forgetting quality, accuracy ratios, final
score and relearn time (the NeurIPS 2023 unlearning challenge's evaluation, hf_structguard.verification).

    accelerate launch scripts/verify.py                       # the embedded digits default, N = 4, structguard
    accelerate launch scripts/verify.py --methods structguard oracle neggrad --num_models 8
    accelerate launch scripts/verify.py --forget_accuracy_target retrained   # stop at the retrained level
    python scripts/verify.py --help                           # every option (the data/model/forget ones of run.py)

Writes <output_dir>/verification.json and verification.md (default output_dir: outputs/verify). Each model's
measurements are cached under <output_dir>/cells and the retrained references under the cache folder, so a
rerun (or an interrupted run) redoes no finished work.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

from hf_structguard.arguments import AnchorArguments, DataArguments, ModelArguments
from hf_structguard.errors import option_errors, run_cli
from hf_structguard.trainer import UnlearningConfig

DEFAULT_OUTPUT_DIR = "outputs/verify"


def main(argv: list[str] | None = None) -> dict:
    """Parse the options and verify; raises :class:`UserInputError` for bad input (``run_cli`` prints it)."""
    from hf_structguard.verification import VerifyArguments, run_verification

    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((DataArguments, ModelArguments, AnchorArguments, UnlearningConfig, VerifyArguments),
                              description=__doc__)
    parser.set_defaults(output_dir=DEFAULT_OUTPUT_DIR)
    with option_errors():
        data_args, model_args, anchor_args, config, verify_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_verification(data_args, model_args, anchor_args, config, verify_args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
