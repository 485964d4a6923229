"""``calm fit``: labelled clips -> a saved classifier (safetensors + JSON, with the feature fingerprint)."""

from __future__ import annotations

import argparse
import warnings

from calm.cli._common import DEFAULT_PROMPT, add_backbone_arguments, add_on_error_argument, check_writable_file
from calm.cli._prepare import ParamHelpFormatter, add_param_argument, backbone_for, encoder_window_hint


def _run(args: argparse.Namespace) -> int:
    from calm.classifiers import save
    from calm.classifiers.trust import describe
    from calm.data.loaders import load_dataset
    from calm.predict import check_fit, fit_classifier, labelled_items

    out = check_writable_file(args.out, "the classifier file")
    params = dict(args.param)
    check_fit(args.method, params, not args.no_calibrate, args.target_frr)  # all before any model loads
    items = labelled_items(load_dataset(args.data))
    backbone = backbone_for(args, args.prompt)
    hint = encoder_window_hint(backbone, [item.media_path for item in items])
    if hint:
        warnings.warn(hint)
    clf = fit_classifier(backbone, items, args.prompt, args.method, batch_size=args.batch_size, store=args.store,
                         on_error=args.on_error, progress=not args.quiet, calibrate=not args.no_calibrate,
                         target_frr=args.target_frr, **params)
    path = save(clf, out)
    print(f"{path}: {describe(clf)} on {len(clf.classes_)} classes ({', '.join(map(str, clf.classes_[:8]))}"
          f"{', ...' if len(clf.classes_) > 8 else ''}); prompt {args.prompt!r}")
    print(f"probabilities: {getattr(clf, 'calibration_status_', 'uncalibrated (--no-calibrate)')}")
    if getattr(clf, "held_out_accuracy_", None) is not None:
        print(f"held-out accuracy on the support: {clf.held_out_accuracy_:.1%} of {clf.n_calibration_} clips, each "
              "classified by a copy fitted without it (an estimate for new clips like these)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from calm import methods

    parser = subparsers.add_parser(
        "fit", help="fit a classifier on labelled clips and save it", formatter_class=ParamHelpFormatter,
        description="Extract features of every labelled clip and fit one method on all of them. The file records "
                    "the model, its options and the prompt, so calm predict uses them and refuses another model. "
                    "The method's parameters, the output path and the data are checked before any model loads; "
                    "with --store, a rerun whose features are all stored loads no model weights.")
    parser.add_argument("--data", required=True,
                        help="a folder of class subfolders, a CSV (path,label[,split]), a dataset root or layout:path")
    parser.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    parser.add_argument("--method", choices=methods.names(feature_only=True), default=methods.DEFAULT_METHOD,
                        help=f"default: {methods.DEFAULT_METHOD}")
    add_param_argument(parser)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"feature prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--store", default=None, help="feature store root, so a rerun skips extraction")
    parser.add_argument("--target-frr", type=float, default=0.05,
                        help="share of known-class clips calm predict --reject may call unknown (default: 0.05)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="save the plain classifier: uncalibrated probabilities, no --reject or --sets")
    add_backbone_arguments(parser, model_default="whisper-base",
                           model_help="local model folder, hub id, whisper-base, whisper-tiny.en or tiny:<family> "
                                      "(default: the offline whisper-base)")
    add_on_error_argument(parser, "is left out with a warning")
    parser.set_defaults(func=_run)
