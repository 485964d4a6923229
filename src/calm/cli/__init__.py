"""The calm command: a thin layer over the library.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed arguments and returning an exit status. Errors have
one path, :func:`main`: a problem with an input, a file or an argument is one line on stderr
naming it, and exit status 1 (``CALM_DEBUG=1`` shows the traceback instead). Python warnings
become plain sentences on stderr, each once, unless ``--quiet``, which also silences transformers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from calm import __version__
from calm.errors import CalmError

SUBCOMMANDS: tuple[str, ...] = ("data", "extract", "evaluate", "fit", "predict", "scan", "demo", "app")

ERRORS = (CalmError, ValueError, OSError, ImportError)
"""What bad input or a bad environment raises: every :class:`~calm.errors.CalmError`, the bare
``ValueError`` of argument checks not yet moved under it, ``OSError`` as the system raised it and
a missing package's ``ImportError``. A ``KeyError``, ``TypeError`` or ``RuntimeError`` is a bug
(or, from torch, a device failure) and keeps its traceback."""

DESCRIPTION = ("Few-shot audio classifiers from the attention heads of audio-language models (SAV, CALM). "
               "Extract head features, fit a classifier on a few labelled clips per class, label new clips, "
               "or evaluate every method over several support draws.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calm", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"calm {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"calm.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    with plain_warnings(f"calm {args.command}", quiet=quiet), quiet_libraries(quiet):
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print(f"calm {args.command}: interrupted; finished items are kept", file=sys.stderr)
            return 130
        except ERRORS as error:
            if os.environ.get("CALM_DEBUG"):
                raise
            print(f"calm {args.command}: {one_line(error)}", file=sys.stderr)
            hint = _hint(args, error)
            if hint:
                print(f"calm {args.command}: {hint}", file=sys.stderr)
            return 1


def one_line(error: BaseException) -> str:
    """The error's message on one line (its lines joined with '; ')."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _hint(args: argparse.Namespace, error: BaseException) -> str | None:
    from calm.media import MediaLoadError  # numpy and soundfile: not at start-up

    if isinstance(error, MediaLoadError) and getattr(args, "on_error", None) == "raise":
        return "use --on-error record to list unreadable files as failed and go on (finished items are kept)"
    return None


@contextmanager
def plain_warnings(prefix: str, quiet: bool) -> Iterator[None]:
    """Show each distinct warning once as ``<prefix>: warning: <message>`` (nothing if ``quiet``)."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if quiet or text in seen:
            return
        seen.add(text)
        print(f"{prefix}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


QUIET_ENVIRONMENT = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                     "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
"""What silences transformers and the hub (read when they are imported)."""


@contextmanager
def quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``quiet``, transformers' progress bars ("Loading weights") and log messages are off
    while the command runs: through the environment for a first import, through transformers'
    own switches if it is already imported (both restored after)."""
    if not quiet:
        yield
        return
    saved = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    hf_logging = sys.modules.get("transformers.utils.logging")
    bars, verbosity = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()) if hf_logging else (False, 0)
    if hf_logging:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if hf_logging:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
