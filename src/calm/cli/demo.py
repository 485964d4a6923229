"""``calm demo``: the offline end-to-end run (see :mod:`calm.demo`)."""

from __future__ import annotations

import argparse

from calm.demo import run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="prepare the demo data, extract with the offline Whisper base, evaluate, print the table",
        description="The offline end-to-end run: build the two demo tasks (spoken numbers, spoofing) from the "
                    "Debian recordings, extract their head features with the offline Whisper base, evaluate every "
                    "method over several support draws and print the table (reports under --out).")
    parser.add_argument("--out", default="runs/demo", help="where the reports go (default: runs/demo)")
    parser.add_argument("--model", default="whisper-base", help="backbone (default: the offline whisper-base)")
    parser.add_argument("--seeds", type=int, default=5, help="support samplings per shot count (default: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default: 16)")
    parser.add_argument("--encoder-seconds", type=float, default=5.0,
                        help="Whisper encoder window in seconds (default 5: the clips' length); 30 = the reference")
    parser.add_argument("--loaders", type=int, default=None, metavar="N",
                        help="worker processes that decode clips while the model runs (0: inline; default: cores - 1)")
    parser.add_argument("--trust", action="store_true",
                        help="also calibration, open-set and prediction-set metrics (refits each method per fold)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_demo(args.out, model=args.model, seeds=args.seeds, batch_size=args.batch_size,
             encoder_seconds=None if args.encoder_seconds >= 30 else args.encoder_seconds, trust=args.trust,
             loaders=args.loaders)
    return 0
