"""``calm.scan``: where each class occurs in long recordings, with a classifier fitted on a few clips.

    >>> clf = calm.load("birds.safetensors")                    # calm fit on a few clips per class
    >>> backbone = calm.load_backbone_for(clf)
    >>> files = calm.scan(backbone, clf, ["nestbox/"], ScanOptions(threshold=0.6, background="noise"))
    >>> files[0].events[0]                                      # Event(file, onset, offset, label, peak, mean)

Each file is cut into windows (:mod:`calm.scanning.windows`; by default as long as the support
clips were), every window is classified, and runs of windows over the threshold become events
(:mod:`calm.scanning.events`). Files are read window by window, never whole, so a 10-hour file
needs the memory of a batch of windows, plus a few numbers per window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from calm.backbones.base import Backbone
from calm.fingerprint import check_fingerprint
from calm.engine import ON_ERROR, feature_fingerprint
from calm.media import AUDIO_SUFFIXES, MediaLoadError, content_hash
from calm.scanning.events import Event, active_labels, find_events
from calm.scanning.features import WindowExtractor
from calm.scanning.windows import Windows, file_frames, plan_windows

MAX_HOP = 0.5
"""The longest default hop, in seconds: event edges are placed within half a hop, and the usual
detection scoring allows 0.5 s of onset error."""


@dataclass(frozen=True)
class ScanOptions:
    """What a scan looks for.

    Attributes:
        window, hop: window length and hop in seconds (default: :func:`support_window`, :func:`default_hop`).
        threshold: the probability a window's top class needs to be active.
        reject: windows the classifier's open-set score rejects are ``unknown_label`` and never
            active (needs a calibrated classifier, as ``calm fit`` saves by default).
        background: a class of the classifier that means "nothing of interest": windows of it
            are never events.
        merge_gap: events of one class at most this many seconds apart are joined.
        on_error: ``"raise"``: a file that cannot be read raises an error naming it; ``"record"``:
            its result has ``error`` set and no windows (never dropped).
    """

    window: float | None = None
    hop: float | None = None
    threshold: float = 0.5
    reject: bool = False
    unknown_label: str = "unknown"
    background: str | None = None
    merge_gap: float = 0.0
    on_error: str = "raise"


@dataclass
class FileScan:
    """One file's scan: per window its probabilities [n, C] (and, with rejection, its open-set
    score and whether it was rejected), the class it is active for (None: not active), and the
    events; or ``error``, why the file could not be read."""

    path: str
    classes: list[str]
    windows: Windows | None = None
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    labels: list[str | None] = field(default_factory=list)
    scores: np.ndarray | None = None
    rejected: np.ndarray | None = None
    events: list[Event] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float:
        """The file's length in seconds (0 when it could not be read)."""
        return self.windows.seconds if self.windows is not None else 0.0


def support_window(classifier: Any, backbone: Backbone) -> float:
    """The window length in seconds a classifier's support suggests: the median support clip
    length, within what the backbone takes. ValueError when the classifier records no support
    lengths (fit on arrays, or by an older calm)."""
    seconds = getattr(classifier, "support_seconds_", None)
    if not seconds:
        raise ValueError("the classifier records no support clip lengths (fit on plain arrays, or saved by an "
                         "older calm): give the window in seconds (calm scan --window S)")
    return window_for(seconds, backbone)


def window_for(seconds: Sequence[float], backbone: Backbone) -> float:
    """The median of clip lengths ``seconds``, within what the backbone takes."""
    window = max(float(np.median(seconds)), backbone.min_seconds)
    return min(window, backbone.window_seconds) if backbone.window_seconds is not None else window


def default_hop(window: float) -> float:
    """Half the window, at most :data:`MAX_HOP` seconds."""
    return min(window / 2, MAX_HOP)


def audio_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder becomes its audio files (by suffix, recursively, sorted). A folder
    without any raises ValueError naming it."""
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{entry}: a folder with no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files.extend(found)
        else:
            files.append(entry)
    return files


def scan(
    backbone: Backbone,
    classifier: Any,
    paths: Sequence[str | os.PathLike],
    options: ScanOptions | None = None,
    *,
    store: Any = None,
    batch_size: int = 8,
    loader_threads: int | None = None,
    progress: bool | Callable[[float, float], None] = False,
) -> list[FileScan]:
    """Scan audio files (or folders of them) with a fitted classifier; one :class:`FileScan` per
    file, in order.

    Args:
        backbone: the classifier's (:func:`calm.load_backbone_for`); features from another backbone
            or prompt than the classifier's raise ValueError naming both. With the backbone option
            ``compile=None`` (the default), a scan of enough windows on a GPU compiles the layers
            first, as :func:`calm.extract` does for clips (:meth:`calm.backbones.Backbone.compile_for`;
            the windows are then stored apart); whether the classifier was fitted on compiled
            layers does not matter.
        classifier: fitted by :func:`calm.fit_classifier` (or loaded with :func:`calm.load`).
        options: :class:`ScanOptions` (window, hop, threshold, rejection, background class).
        store: a feature store (folder or open :class:`~calm.store.FeatureStore`) for the windows'
            features, so a rerun or another classifier on the same backbone and prompt reuses them.
        batch_size, loader_threads: windows per forward pass; background threads that decode the
            next batches (results are the same for every value of both).
        progress: True: a progress bar in hours of audio; a function: called after every batch with
            the seconds of audio scanned so far and in all (what it raises stops the scan).
    """
    options = options or ScanOptions()
    if options.on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {options.on_error!r}")
    if options.reject and not hasattr(classifier, "predict_open"):
        raise ValueError("rejection needs a calibrated classifier; refit it with calm fit (which calibrates by "
                         "default)")
    recorded = getattr(classifier, "fingerprint_", None) or {}
    if "prompt" not in recorded:
        raise ValueError("the classifier records no prompt (fit on plain arrays?); fit it with calm fit")
    check_fingerprint(_uncompiled(recorded), _uncompiled(feature_fingerprint(backbone, recorded["prompt"])),
                      "the classifier")
    window = options.window or support_window(classifier, backbone)
    hop = options.hop or default_hop(window)
    classes = [str(c) for c in classifier.classes_]
    active_labels(np.zeros((0, len(classes))), classes, options.threshold, background=options.background)  # checks
    if not options.merge_gap >= 0:
        raise ValueError(f"merge_gap must be at least 0 seconds, got {options.merge_gap!r}")
    plans = [_plan(path, window, hop, options.on_error) for path in audio_files(paths)]
    backbone.compile_for(sum(len(w) for _, w in plans if isinstance(w, Windows)))  # as calm.extract: long GPU scans
    total = sum(w.seconds for _, w in plans if isinstance(w, Windows))
    bar = _hours_bar(total) if progress is True else None
    tick = _Ticker(bar, progress if callable(progress) else None, total)
    results = []
    with WindowExtractor(backbone, recorded["prompt"], store, batch_size, loader_threads) as extractor:
        for path, planned in plans:
            if not isinstance(planned, Windows):
                results.append(FileScan(str(path), classes, error=planned))
                continue
            try:
                results.append(_scan_file(extractor, classifier, path, planned, classes, options, tick))
            except MediaLoadError as error:
                if options.on_error == "raise":
                    raise
                results.append(FileScan(str(path), classes, error=error.reason))
    if bar is not None:
        bar.close()
    return results


def _uncompiled(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint but for ``compile``: compiled layers are the same model (their numbers differ in
    the last bits), so a classifier and the windows it scans may differ there."""
    return {key: value for key, value in fingerprint.items() if key != "compile"}


def _plan(path: Path, window: float, hop: float, on_error: str) -> tuple[Path, Windows | str]:
    """The file's windows, or (recording errors) why it cannot be read."""
    try:
        frames, rate = file_frames(path)
    except MediaLoadError as error:
        if on_error == "raise":
            raise
        return path, error.reason
    return path, plan_windows(frames, rate, window, hop)


def _scan_file(extractor: WindowExtractor, classifier: Any, path: Path, windows: Windows, classes: list[str],
               options: ScanOptions, tick: "_Ticker") -> FileScan:
    content = content_hash(path) if extractor.store is not None else str(path)  # the hash keys stored windows only
    probabilities, scores, rejected = [], [], []
    done = 0
    for features in extractor.batches(path, windows, content):
        if features.fingerprint.get("compile") != classifier.fingerprint_.get("compile"):
            features = replace(features, fingerprint=dict(classifier.fingerprint_))  # the same but for compile
        probabilities.append(np.asarray(classifier.predict_proba(features), dtype=np.float64))
        if options.reject:
            labels, score = classifier.predict_open(features, unknown=options.unknown_label)
            scores.append(np.asarray(score, dtype=np.float64))
            rejected.append(np.array([label == options.unknown_label for label in labels], dtype=bool))
        tick(windows.spans[done + len(features)] - windows.spans[done])
        done += len(features)
    p = np.concatenate(probabilities)
    result = FileScan(str(path), classes, windows, p)
    if options.reject:
        result.scores, result.rejected = np.concatenate(scores), np.concatenate(rejected)
    result.labels = active_labels(p, classes, options.threshold, result.rejected, options.background)
    result.events = find_events(str(path), windows.spans, p, classes, result.labels, options.merge_gap)
    return result


class _Ticker:
    """Reports seconds of audio scanned to a progress bar (in hours) and a callback, either optional."""

    def __init__(self, bar: Any, callback: Callable[[float, float], None] | None, total: float) -> None:
        self.bar, self.callback, self.total, self.done = bar, callback, total, 0.0

    def __call__(self, seconds: float) -> None:
        self.done += float(seconds)
        if self.bar is not None:
            self.bar.update(seconds / 3600)
        if self.callback is not None:
            self.callback(self.done, self.total)


def _hours_bar(hours_of_seconds: float) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=hours_of_seconds / 3600, unit="h", desc="scan", smoothing=0.1,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} h of audio [{elapsed}<{remaining}]")
