"""Hub integration: model cards with a deletion receipt, and pushing an unlearned model of a run folder."""

from .card import library_versions, render_model_card, write_model_card
from .push import public_files, push_run, write_preprocessor_config
from .receipt import (
    DeletionReceipt,
    fingerprint_ids,
    load_or_create_salt,
    make_receipt,
    receipt_for_run,
)

__all__ = [
    "DeletionReceipt",
    "fingerprint_ids",
    "library_versions",
    "load_or_create_salt",
    "make_receipt",
    "public_files",
    "push_run",
    "receipt_for_run",
    "render_model_card",
    "write_model_card",
    "write_preprocessor_config",
]
