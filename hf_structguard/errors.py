"""User-input errors: typed for library callers, one line and exit code 2 for the command-line scripts.

Light on purpose (no torch, no transformers at import): the scripts import it before parsing arguments.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_USER_ERROR = 2


class UserInputError(ValueError):
    """Bad input (an option, a path, a Hub id, a file): the message names the option and the fix."""


class UnlearningDiverged(UserInputError):
    """The unlearning loss or its gradients stopped being finite at ``step``: the settings (learning rate,
    deletion loss) are too aggressive for this model. Raised before that step's update, so the model keeps its
    last finite weights."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (Hub errors span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def is_offline_miss(error: BaseException) -> bool:
    """Whether ``error`` says a Hub file is neither cached nor downloadable (offline mode or no network)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled))


def hub_problem(error: BaseException) -> str | None:
    """A short reason for a Hub look-up failure (offline and not cached, no such repo, no such file), else None."""
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    if is_offline_miss(error):
        return ("not on this machine and the Hub is not reachable (HF_HUB_OFFLINE=1 or no network): give a local "
                "folder, or run once online to cache it")
    if isinstance(error, GatedRepoError):
        return "a gated repo: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(error, RepositoryNotFoundError):
        return "no such repo on the Hub (check the id; a private repo needs `hf auth login`)"
    if isinstance(error, EntryNotFoundError):
        return f"the repo lacks a needed file ({one_line(error)})"
    return None


def check_output_dir(path: str | os.PathLike, option: str = "--output_dir") -> None:
    """:class:`UserInputError` naming ``option`` unless ``path`` is a writable folder or can be created as one
    (its nearest existing ancestor is a writable folder). Creates nothing."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{option} {path}: cannot create a folder there, {existing} is a file; choose another "
                             "folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"{option} {path}: {existing} is not writable; choose a folder you can write to")


@contextmanager
def option_errors(option: str | None = None, *extra: type[BaseException]) -> Iterator[None]:
    """Turn a ``ValueError`` (or one of ``extra``) raised inside into a :class:`UserInputError`, its message
    prefixed with ``option`` (e.g. ``"--anchors PATH"``) unless it already starts with it."""
    prefix = f"{option}: " if option else ""
    try:
        yield
    except UserInputError as error:
        if str(error).startswith(prefix):
            raise
        raise UserInputError(f"{prefix}{one_line(error)}") from error
    except (ValueError, *extra) as error:
        raise UserInputError(f"{prefix}{hub_problem(error) or one_line(error)}") from error


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a script's ``main``: 0 on success; a :class:`UserInputError` prints ``error: <message>`` (one line, no
    traceback) on stderr and returns :data:`EXIT_USER_ERROR`."""
    try:
        main(argv)
    except UserInputError as error:
        logging.getLogger("hf_structguard").debug("user input error", exc_info=True)
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
