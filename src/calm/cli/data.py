"""``calm data``: list and prepare demo datasets, and describe a local dataset."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from calm.errors import InputError


def _list(args: argparse.Namespace) -> int:
    from calm.devdata.recipes import RECIPES as recipes  # numpy and soundfile: not at start-up

    for name in sorted(recipes):
        print(f"{name}\t{first_sentence(recipes[name].__doc__ or '')}")
    return 0


def first_sentence(doc: str) -> str:
    """A docstring's first sentence, whole even when it runs over several lines, as plain text."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    found = re.match(r"(.+?[.?!])(?=\s+[A-Z]|$)", paragraph)
    return plain(found.group(1) if found else paragraph)


def plain(text: str) -> str:
    """Docstring markup as plain text: ``code`` and :role:`target` become code and target."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


def _prepare(args: argparse.Namespace) -> int:
    from calm.devdata.recipes import RECIPES as recipes  # numpy and soundfile: not at start-up

    if args.recipe not in recipes:
        raise InputError(f"unknown recipe {args.recipe!r}; known: {', '.join(sorted(recipes))} (calm data list)")
    print(recipes[args.recipe](Path(args.out)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from calm.data.episodes import protocol_of  # numpy and soundfile: not at start-up
    from calm.data.loaders import LAYOUTS, detect_layout, load_dataset

    prefix = args.dataset.partition(":")[0]
    layout = prefix if prefix in LAYOUTS else detect_layout(args.dataset)[0]
    items = load_dataset(args.dataset)
    protocol = protocol_of(items)
    labels = Counter(name for i in items for name in (i.labels or (None,)))
    folds = Counter(str(i.fold) for i in items if i.fold is not None)
    print(f"layout: {layout}\nitems: {len(items)}\nprotocol: {protocol}")
    print(f"classes: {len([c for c in labels if c is not None])}" + (f" (+{labels[None]} unlabelled)" if None in labels else ""))
    for name, count in sorted(labels.items(), key=lambda kv: str(kv[0])):
        if name is not None:
            print(f"  {name}\t{count}")
    if folds:
        print("folds: " + ", ".join(f"{fold} ({count})" for fold, count in sorted(folds.items())))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list and prepare the demo and dev datasets; describe a dataset")
    commands = parser.add_subparsers(dest="data_command", required=True)
    commands.add_parser("list", help="list the dataset recipes").set_defaults(func=_list)
    prepare = commands.add_parser("prepare", help="build a recipe's dataset; prints the path of its CSV")
    prepare.add_argument("recipe", help="recipe name (see `calm data list`)")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.set_defaults(func=_prepare)
    info = commands.add_parser("info", help="detect a dataset's layout and count its items, classes and folds")
    info.add_argument("dataset", help="a folder, metadata file or layout:path")
    info.set_defaults(func=_info)
