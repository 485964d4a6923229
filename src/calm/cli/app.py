"""``calm app``: a local web page to make classes of clips, fit, classify, and save the classifier."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import tempfile
from pathlib import Path

from calm.cli._common import DEFAULT_PROMPT, add_backbone_arguments, load_model


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    from calm.app import AppSession, make_server

    if not is_loopback(args.host):
        print(f"calm app: WARNING: listening on {args.host}: the page has no authentication, so anyone who can "
              "reach this address can upload files, read folders of this machine into the app and run the model",
              file=sys.stderr)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="calm app: %(message)s")
    with tempfile.TemporaryDirectory(prefix="calm-app-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        session = AppSession(load_model(args), workdir, args.prompt, batch_size=args.batch_size)
        if args.classifier:
            session.load(args.classifier)
        server = make_server(session, args.host, args.port)
        host, port = server.server_address[:2]
        print(f"calm app: open http://{'localhost' if is_loopback(args.host) else host}:{port}/ "
              "(Ctrl+C to stop)", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="build and try a few-shot classifier in a local web page",
        description="Serve a web page (nothing loaded from the internet) where you make classes, add clips by "
                    "upload, recording or a folder, fit with one button, classify new clips, see the head weights, "
                    "and download the classifier file that calm predict reads.")
    parser.add_argument("--classifier", default=None, help="a classifier file to start with (from calm fit)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; any other has no authentication)")
    parser.add_argument("--port", type=int, default=7860,
                        help="port (default: 7860; 0 picks a free one)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"feature prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--workdir", default=None,
                        help="keep the feature store (and uploaded clips) here, so a restart re-extracts nothing "
                             "(default: a temporary folder)")
    add_backbone_arguments(parser, model_default="whisper-base")
    parser.set_defaults(func=_run)
