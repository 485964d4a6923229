"""What the commands that run a model settle before any work: estimator parameters checked
against the method (and listed in ``--help``), input files checked, and the backbone, whose
weights are not loaded when the feature store already holds every feature asked for."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Sequence

from calm import methods
from calm.cli._common import backbone_options


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE read as JSON where it parses (``tau=0.1``, ``top_k=null``), else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


class ParamHelpFormatter(argparse.HelpFormatter):
    """Help whose ``--param`` entry lists each method's parameters, read from the estimators only
    when help is shown (so the command's start imports none of them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if action.dest == "param" and text is not None:
            listed = "; ".join(f"{name}: {', '.join(methods.get(name).parameter_names()) or '-'}"
                               for name in methods.names(feature_only=True))
            text = f"{text}. Parameters by method: {listed}"
        return text


def add_param_argument(parser: argparse.ArgumentParser) -> None:
    """``--param NAME=VALUE`` (repeatable); its help lists the parameters of every method."""
    parser.add_argument("--param", type=parse_param, action="append", default=[], metavar="NAME=VALUE",
                        help="estimator parameter, repeatable (e.g. --param tau=0.1)")


def check_files(paths: Sequence[str]) -> None:
    """Every path is a readable file that an audio or video decoder recognises (from its header);
    else one ValueError naming the first bad one and why, before any model loads."""
    from calm.media import MediaLoadError, duration  # soundfile: only for the commands that read files

    for path in paths:
        try:
            duration(path)
        except MediaLoadError as error:
            raise ValueError(f"{error} (checked before loading the model; "
                             "--on-error record lists such files as failed rows instead)") from None


def backbone_for(args: argparse.Namespace, prompt: str) -> Any:
    """The backbone ``--model`` names with the arguments' options; with ``--store``, one whose
    weights load only if a feature is missing (:func:`calm.backbones.loading.load_backbone_deferred`)."""
    from calm.backbones.loading import load_backbone_deferred  # torch: only where a model may run

    return load_backbone_deferred(args.model, backbone_options(args), store=args.store, prompt=prompt)


FULL_WINDOW = 30.0
"""Whisper's own encoder window, in seconds (the speed hint is about running all of it)."""

SHORT_CLIPS = 1 / 3
"""The speed hint is given when the longest clip is shorter than this share of the window."""


def encoder_window_hint(backbone: Any, paths: Sequence[Any]) -> str | None:
    """For a Whisper backbone running its full 30 s window on a CPU over clips much shorter than
    that: what ``--encoder-seconds`` would give (None otherwise, or when no weights were loaded:
    the features are all stored)."""
    from calm.backbones.loading import DeferredBackbone  # imported with the backbone already
    from calm.media import MediaLoadError, duration

    if isinstance(backbone, DeferredBackbone) and not backbone.loaded:
        return None
    if not backbone.has_encoder_window or backbone.options.encoder_seconds is not None \
            or backbone.device.type != "cpu" or not paths:
        return None
    window = backbone.window_seconds or 0.0
    if window < FULL_WINDOW:
        return None
    lengths = []
    for path in paths:
        try:
            lengths.append(duration(path))
        except MediaLoadError:
            continue
    if not lengths or max(lengths) >= SHORT_CLIPS * window:
        return None
    seconds = max(1, math.ceil(max(lengths)))
    return (f"the clips are at most {max(lengths):.1f} s long, but Whisper's encoder runs on its full {window:g} s "
            f"window; --encoder-seconds {seconds} would give it about {window / seconds:.0f}x less to encode on this "
            "CPU. It changes the features: they are stored apart, and a classifier records the window it was fit with")
