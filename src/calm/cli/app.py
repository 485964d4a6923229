"""``calm app``: a local web page to make classes of clips, fit, classify, and save the classifier."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from calm.cli._common import DEFAULT_PROMPT, add_backbone_arguments, load_model

SIGTERM_STATUS = 128 + signal.SIGTERM


class _Terminated(Exception):
    """SIGTERM arrived: stop as on Ctrl+C (the temporary folder of uploads is removed)."""


def port_number(text: str) -> int:
    """``--port``: an integer in 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {port}")
    return port


def writable_folder(path: Path, what: str) -> Path:
    """``path``, made if missing; ValueError naming it if it cannot be made or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{what} {path}: cannot write there ({error.strerror or error})") from None
    return path


def _run(args: argparse.Namespace) -> int:
    from calm.app import AppSession, make_server  # torch: imported when the app runs, not for other commands
    from calm.app.guard import is_loopback

    root = Path(args.root).resolve()
    if not root.is_dir():
        raise ValueError(f"--root {args.root}: no such folder")
    workdir = writable_folder(Path(args.workdir), "--workdir") if args.workdir else None
    if not is_loopback(args.host):
        print(f"calm app: WARNING: listening on {args.host}: the page has no authentication, so anyone who can "
              f"reach this address can upload files, read datasets under {root} into the app and run the model",
              file=sys.stderr)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="calm app: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="calm-app-") as scratch:
            session = AppSession(load_model(args), workdir or Path(scratch), args.prompt,
                                 batch_size=args.batch_size, root=root)
            if args.classifier:
                session.load(args.classifier)
            return _serve(session, make_server(session, args.host, args.port), args.host)
    except _Terminated:  # while the model loaded
        print("calm app: stopped (SIGTERM)", file=sys.stderr)
        return SIGTERM_STATUS
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(session: Any, server: Any, host: str) -> int:
    """Serve until Ctrl+C or SIGTERM; then stop accepting, cancel a running fit at its next batch,
    wait for the model to finish its step (a second Ctrl+C: at once) and return 130 or 143."""
    from calm.app.guard import is_loopback

    address, port = server.server_address[:2]
    shown = f"[{address}]" if ":" in address else "localhost" if is_loopback(host) else address
    print(f"calm app: open http://{shown}:{port}/ (Ctrl+C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
        return 0
    except (KeyboardInterrupt, _Terminated) as stop:
        status, why = (SIGTERM_STATUS, "SIGTERM") if isinstance(stop, _Terminated) else (130, "Ctrl+C")
        server.server_close()
        print(f"calm app: stopped ({why})", file=sys.stderr, flush=True)
        try:
            session.stop()
        except (KeyboardInterrupt, _Terminated):
            os._exit(status)  # a second stop while the model finishes its step: at once
        return status
    finally:
        server.server_close()


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="build and try a few-shot classifier in a local web page",
        description="Serve a web page (nothing loaded from the internet) where you make classes, add clips by "
                    "upload, recording or a dataset folder under --root, fit with one button, classify new clips "
                    "(with 'unknown' and prediction sets), see the head weights, and download the classifier file "
                    "that calm predict reads.")
    parser.add_argument("--classifier", default=None, help="a classifier file to start with (from calm fit)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; ::1 for IPv6; any other than loopback "
                             "has no authentication)")
    parser.add_argument("--port", type=port_number, default=7860,
                        help="port, 0..65535 (default: 7860; 0 picks a free one)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"feature prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--workdir", default=None,
                        help="keep the feature store (and uploaded clips) here, so a restart re-extracts nothing; "
                             "made if missing, and checked to be writable at start (default: a temporary folder, "
                             "removed on exit, Ctrl+C or SIGTERM)")
    parser.add_argument("--root", default=".",
                        help="the page's 'add folder' reads datasets only under this folder (default: the current "
                             "folder)")
    add_backbone_arguments(parser, model_default="whisper-base")
    parser.set_defaults(func=_run)
