"""Deletion receipts: a publishable record that k training samples were unlearned, without the samples.

The receipt holds the number of forgotten samples, a *salted* SHA-256 fingerprint of their train-row ids
(:meth:`hf_structguard.data.ForgetSet.fingerprint`: ``sha256(salt + ",".join(sorted ids))``), the forget-set
mode, the date and whether the deletion is complete (``complete`` is False, with the remaining forget accuracy,
when the method ended with forgotten samples still classified correctly). The salt stays with the data owner (``<output_dir>/deletion_salt.txt``, never pushed):
without it the fingerprint cannot be matched against guessed ids; with it, the owner can prove which ids a
published model was unlearned on. Images, raw ids and seeds are never part of a receipt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..data import ForgetSet
from ..data.forget import write_private_text

logger = logging.getLogger(__name__)

SALT_FILE = "deletion_salt.txt"
RECEIPT_FILE = "deletion_receipt.json"
FORGET_SET_FILE = "forget_set.json"
FINGERPRINT_ALGORITHM = 'sha256(salt + ",".join(sorted train-row ids)), hex'
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DeletionReceipt:
    """What a model card publishes about a deletion: k, the salted fingerprint, the mode, the date, completeness."""

    k: int
    fingerprint: str
    mode: str
    date: str  # ISO 8601 date (UTC) of the unlearning run's card
    algorithm: str = FINGERPRINT_ALGORITHM
    complete: bool = True  # False: some forgotten samples are still classified correctly
    remaining_forget_accuracy: float | None = None  # A_f (%) of the unlearned model, when known

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"a deletion receipt needs k >= 1, got {self.k}")
        if not _HEX64.fullmatch(self.fingerprint):
            raise ValueError(f"fingerprint must be a 64-character lowercase sha256 hex digest, got {self.fingerprint!r}")

    def verify(self, ids: Sequence[int], salt: str) -> bool:
        """Whether ``ids`` (any order) and ``salt`` produce this receipt's fingerprint and k."""
        return len(ids) == self.k and fingerprint_ids(ids, salt) == self.fingerprint

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DeletionReceipt:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        names = ("k", "fingerprint", "mode", "date", "algorithm", "complete", "remaining_forget_accuracy")
        return cls(**{key: data[key] for key in names if key in data})


def fingerprint_ids(ids: Sequence[int], salt: str) -> str:
    """The salted fingerprint of train-row ids (same definition as ``ForgetSet.fingerprint``)."""
    return ForgetSet(indices=list(ids), mode="ids").fingerprint(salt)


def load_or_create_salt(output_dir: str | os.PathLike, salt: str | None = None) -> str:
    """The salt for ``output_dir``'s receipt: ``salt`` if given, else the saved one, else a new random one.

    A generated salt (``secrets.token_hex(32)``) is written to the private file
    ``<output_dir>/deletion_salt.txt`` (owner-only permissions) and never leaves the machine: keep it to be
    able to prove later which ids the receipt covers. A given salt is used as is and not written anywhere.
    """
    if salt is not None:
        if not salt:
            raise ValueError("salt must be a non-empty string (or None to generate a random one)")
        return salt
    path = Path(output_dir) / SALT_FILE
    if path.is_file():
        saved = path.read_text(encoding="utf-8").strip()
        if saved:
            return saved
    salt = secrets.token_hex(32)
    write_private_text(path, salt + "\n")
    logger.warning(
        "Generated a random salt for the deletion receipt and saved it ONLY to the private file %s. Keep it "
        "(it is never pushed): with it you can prove which sample ids the published fingerprint covers.", path,
    )
    return salt


def make_receipt(
    forget_set: ForgetSet, salt: str, date: str | None = None, forget_accuracy: float | None = None
) -> DeletionReceipt:
    """A receipt for ``forget_set`` fingerprinted with ``salt``, dated ``date`` (default: today, UTC);
    ``forget_accuracy`` (A_f, %) above 0 marks it incomplete."""
    if not salt:
        raise ValueError("a deletion receipt needs a non-empty salt (see load_or_create_salt)")
    date = date or datetime.now(timezone.utc).date().isoformat()
    return DeletionReceipt(
        k=forget_set.k, fingerprint=forget_set.fingerprint(salt), mode=forget_set.mode, date=date,
        complete=not forget_accuracy, remaining_forget_accuracy=forget_accuracy,
    )


def receipt_for_run(
    output_dir: str | os.PathLike, method: str, salt: str | None = None, forget_accuracy: float | None = None
) -> DeletionReceipt:
    """The receipt of the run in ``output_dir`` for ``method``, saved as ``<output_dir>/<method>/deletion_receipt.json``.

    Reads the private ``<output_dir>/forget_set.json``; ``forget_accuracy`` is the method's A_f (> 0: an
    incomplete deletion). An existing receipt that differs only by its date is reused (so its date stays that
    of the first card and re-rendering the card is idempotent).
    """
    output_dir = Path(output_dir)
    forget_file = output_dir / FORGET_SET_FILE
    if not forget_file.is_file():
        raise ValueError(
            f"{forget_file} not found: the deletion receipt is computed from the run's private forget-set file "
            "(written by the pipeline next to results.json)."
        )
    forget_set = ForgetSet.from_json(forget_file)
    receipt = make_receipt(forget_set, load_or_create_salt(output_dir, salt), forget_accuracy=forget_accuracy)
    path = output_dir / method / RECEIPT_FILE
    if path.is_file():
        try:
            previous = DeletionReceipt.load(path)
        except (ValueError, TypeError, KeyError):
            previous = None
        if previous is not None and dataclasses.replace(previous, date=receipt.date) == receipt:
            return previous
    path.parent.mkdir(parents=True, exist_ok=True)
    receipt.save(path)
    return receipt
