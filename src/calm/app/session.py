"""What the browser app does, as a library: classes of clips, fit, classify, save and load.

    >>> session = AppSession(calm.load_backbone("whisper-base"), workdir="app-work")
    >>> session.add_class("dog"); session.add_clip("dog", "bark.wav", Path("bark.wav").read_bytes())
    >>> ...; session.fit()                  # only clips not yet in the feature store are extracted
    >>> session.classify("new.wav", data)   # -> Prediction(label, probabilities)

Every model step is a call of the public API (:func:`calm.extract` with a feature store,
:func:`calm.predict.fit_classifier`, :func:`calm.predict.predict_files`,
:func:`calm.classifiers.save` / :func:`calm.classifiers.load`). One lock serialises them: the
backbone runs one request at a time, and a second request while one runs gets :class:`BusyError`.

The session reads files of this machine only inside its ``root`` (:meth:`AppSession.add_folder`);
what the page uploads goes under ``workdir``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from calm.app.guard import inside, path_under_root
from calm.backbones.base import Backbone
from calm.classifiers import load, plot_weight_maps, save
from calm.classifiers.conformal import LargeSetWarning, rejection_threshold
from calm.classifiers.plots import layer_profile, weight_maps
from calm.classifiers.trust import describe
from calm.data.items import Item
from calm.data.loaders import LAYOUTS, load_dataset, media_item
from calm.errors import CalmError
from calm.fingerprint import check_fingerprint
from calm.heads import extract, feature_fingerprint
from calm.media import MediaLoadError, load_audio
from calm.predict import Prediction, fit_classifier, predict_files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SET_LEVEL = 0.9
"""Coverage of the prediction sets the page shows."""
log = logging.getLogger("calm.app")


class BusyError(CalmError, RuntimeError):
    """The backbone is running another request (a fit or a classification)."""


class StoppedError(CalmError, RuntimeError):
    """The app is stopping (:meth:`AppSession.stop`): the fit was cancelled between two batches."""


@dataclass
class Progress:
    """Where the running request is: ``stage`` (idle, extracting, fitting: clips ``done`` of ``total``;
    scanning: seconds of audio ``done`` of ``total``)."""

    stage: str = "idle"
    done: int = 0
    total: int = 0


@dataclass
class FitResult:
    """A fit: the classifier's type, classes, how many clips it saw, the warnings it raised, and its
    held-out accuracy on those clips (None when it could not be estimated, e.g. one clip a class)."""

    method: str
    classes: list[str]
    clips: int
    warnings: list[str] = field(default_factory=list)
    held_out_accuracy: float | None = None


class AppSession:
    """Named classes of clips, a feature store under ``workdir``, and the fitted (or loaded) classifier.

    Args:
        backbone: from :func:`calm.load_backbone`.
        workdir: uploaded clips go to ``workdir/clips``, features to the store ``workdir/store``.
        prompt: the feature prompt of new fits (a loaded classifier brings its own).
        batch_size: clips per forward pass, and per step of the progress shown while fitting.
        root: the folder whose datasets :meth:`add_folder` may read (default: the current directory).
    """

    def __init__(self, backbone: Backbone, workdir: str | Path, prompt: str, batch_size: int = 8,
                 root: str | Path | None = None) -> None:
        self.backbone = backbone
        self.workdir = Path(workdir)
        self.prompt = prompt
        self.batch_size = batch_size
        self.root = Path.cwd().resolve() if root is None else Path(root).resolve()
        self.classes: dict[str, dict[str, Path]] = {}
        self.classifier: Any = None
        self.progress = Progress()
        self.set_sizes: list[int] = []
        self.shots: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    # -- classes and clips ------------------------------------------------------------------
    def add_class(self, name: str) -> str:
        """Add an empty class (a name of letters, digits, space, ``. _ -``); an existing one is kept."""
        name = name.strip()
        if not name or name in (".", "..") or not re.fullmatch(r"[\w .-]+", name):
            raise ValueError(f"class name {name!r}: use letters, digits, spaces, '.', '_' or '-'")
        self.classes.setdefault(name, {})
        return name

    def remove_class(self, name: str) -> None:
        self._clips_of(name)
        del self.classes[name]

    def add_clip(self, class_name: str, filename: str, data: bytes) -> str:
        """Store an uploaded clip under ``class_name``; returns its name in the class.

        Raises :class:`calm.MediaLoadError` naming ``filename`` if the bytes do not decode as audio
        (the clip is then not added).
        """
        clips = self._clips_of(class_name)
        path = self._write_upload(Path("clips") / class_name, filename, data)
        name = _unique(Path(filename).name or path.name, clips)
        clips[name] = path
        return name

    def remove_clip(self, class_name: str, name: str) -> None:
        clips = self._clips_of(class_name)
        if name not in clips:
            raise ValueError(f"class {class_name!r} has no clip {name!r}")
        del clips[name]

    def add_folder(self, spec: str | Path) -> int:
        """Add every labelled clip of a dataset under :attr:`root` (a folder of class subfolders, a
        CSV, ``layout:path``: see :func:`calm.load_dataset`; relative to the root) by reference;
        returns how many were added.

        The folder or metadata file, and every clip it lists, must lie inside the root (symbolic
        links resolved): the page can make the app read nothing else on this machine. A dataset
        that does not load is refused with a message that quotes nothing of the file (the
        loader's own message, which may, goes to the log of the terminal running the app).
        """
        path = self._under_root(spec)
        try:
            items = load_dataset(path)
        except (ValueError, OSError) as error:
            log.warning("%s: %s", spec, error)
            raise ValueError(f"{spec}: not a dataset the app can read (a folder of class subfolders, or a CSV "
                             "with path and label columns); the reason is in the terminal running calm app") from None
        outside = [i for i in items if i.audio is not None and not inside(Path(i.audio), self.root)]
        if outside:
            raise ValueError(f"{spec}: {len(outside)} of its {len(items)} clip(s) lie outside {self.root}, "
                             "the folder the app may read; nothing was added")
        multi = [i.id for i in items if isinstance(i.label, tuple)]
        if multi:
            raise ValueError(f"{spec}: the app takes one label per clip; {len(multi)} clip(s) have several")
        added = 0
        for item in items:
            if item.label is None or item.audio is None:
                continue
            clips = self.classes.setdefault(self.add_class(str(item.label)), {})
            if item.audio not in clips.values():
                clips[_unique(Path(item.audio).name, clips)] = Path(item.audio)
                added += 1
        return added

    def items(self) -> list[Item]:
        """Every clip as a labelled item; the id ``class/name`` keys it in the feature store."""
        return [media_item(f"{label}/{name}", path, label)
                for label, clips in self.classes.items() for name, path in clips.items()]

    # -- model steps ------------------------------------------------------------------------
    def fit(self, on_progress: Callable[[Progress], None] | None = None) -> FitResult:
        """Extract the clips not in the store yet (batch by batch, updating :attr:`progress`), then
        fit :func:`calm.predict.fit_classifier`'s default method on all clips."""
        items = self.items()
        counts = [len(clips) for clips in self.classes.values()]
        empty = [name for name, clips in self.classes.items() if not clips]
        if len(self.classes) < 2 or empty:
            raise ValueError("fit needs at least two classes, each with at least one clip"
                             + (f"; no clips in {', '.join(map(repr, empty))}" if empty else ""))
        with self.running(), self.idle_after(on_progress):
            store = self.workdir / "store"
            self.report(on_progress, "extracting", 0, len(items))
            for start in range(0, len(items), self.batch_size):
                if self.stopping.is_set():
                    raise StoppedError("the app is stopping: the fit was cancelled")
                batch = items[start:start + self.batch_size]
                extract(self.backbone, batch, self.prompt, batch_size=self.batch_size, store=store)
                self.report(on_progress, "extracting", start + len(batch), len(items))
            self.report(on_progress, "fitting", len(items), len(items))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                classifier = fit_classifier(self.backbone, items, self.prompt, batch_size=self.batch_size,
                                            store=store)
            self._use(classifier, (min(counts), max(counts)))
        return FitResult(describe(classifier), [str(c) for c in classifier.classes_], len(items),
                         list(dict.fromkeys(str(w.message) for w in caught)),
                         getattr(classifier, "held_out_accuracy_", None))

    def classify(self, filename: str, data: bytes) -> Prediction:
        """Label one uploaded clip; an undecodable one raises :class:`calm.MediaLoadError` naming ``filename``.

        The row is :func:`calm.predict.predict_files`'s; with a classifier that can reject, with
        ``reject=True`` (its label is "unknown" below the classifier's threshold, and it has the
        open-set score) and its :data:`SET_LEVEL` prediction set, whose size is kept for
        :meth:`set_summary`.
        """
        classifier = self.fitted()
        path = self._write_upload(Path("queries"), filename, data)
        trusted = self.can_reject()
        with self.running(), warnings.catch_warnings():
            warnings.simplefilter("ignore", LargeSetWarning)  # the page says it over all clips (set_summary)
            row = predict_files(self.backbone, classifier, [path], batch_size=1, reject=trusted,
                                sets=SET_LEVEL if trusted else None)[0]
        if row.prediction_set is not None:
            self.set_sizes.append(len(row.prediction_set))
        return row

    def can_reject(self) -> bool:
        """Whether the classifier gives "unknown" and prediction sets (calibrated on enough clips)."""
        return getattr(self.classifier, "threshold_", None) is not None and hasattr(self.classifier, "predict_open")

    def reject_threshold(self, rate: float) -> float | None:
        """The open-set score below which a clip is "unknown" when a share ``rate`` of clips like the
        support may be turned away: :func:`calm.classifiers.conformal.rejection_threshold` of the
        classifier's out-of-fold support scores, as ``calm fit --target-frr`` sets it (at its own
        rate this is the classifier's threshold). None: too few clips to turn any away at this rate."""
        if not self.can_reject():
            raise ValueError("this classifier cannot say unknown: fit it with at least 2 clips per class")
        threshold = rejection_threshold(self.classifier.open_scores_, rate)
        return threshold if np.isfinite(threshold) else None

    def set_summary(self) -> dict[str, Any] | None:
        """What the prediction sets of the clips classified since the fit (or load) held: their
        ``coverage``, ``mean_size`` of ``classes`` over ``clips``, and the ``shots`` (fewest, most
        clips per class) of a fit made here; None before any set."""
        if not self.set_sizes:
            return None
        return {"coverage": SET_LEVEL, "mean_size": float(np.mean(self.set_sizes)), "clips": len(self.set_sizes),
                "classes": len(self.classifier.classes_), "shots": self.shots}

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel a running fit at its next batch and wait (up to ``timeout`` s) for the model to be
        idle; from then on every model request is refused as busy. Returns whether it is idle."""
        self.stopping.set()
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)

    def save(self, path: str | Path) -> Path:
        """Write the classifier with :func:`calm.classifiers.save` (the file ``calm predict`` reads)."""
        return save(self.fitted(), path)

    def load(self, path: str | Path) -> None:
        """Load a classifier file; one fit on other features (model, dtype, prompt) raises ValueError."""
        classifier = load(path)
        recorded = getattr(classifier, "fingerprint_", None) or {}
        if "prompt" not in recorded:
            raise ValueError(f"{path}: the classifier records no prompt, so the app cannot use it")
        check_fingerprint(recorded, feature_fingerprint(self.backbone, recorded["prompt"]), str(path))
        self._use(classifier, None)

    def load_bytes(self, filename: str, data: bytes) -> None:
        """:meth:`load` for an uploaded file; errors name ``filename``."""
        path = self._save_bytes(Path("loaded"), filename, data)
        try:
            self.load(path)
        except ValueError as error:
            raise ValueError(str(error).replace(str(path), filename)) from None

    def weight_map_png(self, path: str | Path) -> Path:
        """The head x class weight maps of the classifier as a PNG (:func:`calm.classifiers.plot_weight_maps`)."""
        classifier = self.fitted()
        return plot_weight_maps(classifier, path, title=f"{describe(classifier)}: head weight per class")

    def weight_maps(self) -> dict[str, Any]:
        """The head x class weight maps (:func:`calm.classifiers.plots.weight_maps`) as lists: the
        ``classes``, and per site in ``sites`` [class][layer][head] (None where the site has no such head)."""
        classifier = self.fitted()
        maps = weight_maps(classifier)
        return {"classes": [str(c) for c in classifier.classes_],
                "sites": {site: np.where(np.isnan(grid), None, grid).tolist() for site, grid in maps.items()}}

    def layer_profile(self) -> dict[str, list[float]]:
        """Share of the head weight per layer, per site (:func:`calm.classifiers.layer_profile`)."""
        return {site: mass.tolist() for site, mass in layer_profile(self.fitted()).items()}

    # -- helpers ----------------------------------------------------------------------------
    def _use(self, classifier: Any, shots: tuple[int, int] | None) -> None:
        self.classifier, self.shots, self.set_sizes = classifier, shots, []

    def _under_root(self, spec: str | Path) -> str:
        """``spec`` (a path, or ``layout:path``) with its path resolved under :attr:`root`;
        ValueError for a remote layout, a path outside the root or one that does not exist."""
        layout, _, rest = str(spec).partition(":")
        if not (rest and layout in LAYOUTS):
            layout, rest = "", str(spec)
        if layout == "hf":
            raise ValueError(f"{spec}: the app reads folders and files under {self.root} only")
        path = path_under_root(self.root, rest, str(spec))
        return f"{layout}:{path}" if layout else str(path)

    def _clips_of(self, class_name: str) -> dict[str, Path]:
        if class_name not in self.classes:
            raise ValueError(f"no class {class_name!r}; make it first")
        return self.classes[class_name]

    def fitted(self) -> Any:
        """The classifier; ValueError when there is none yet."""
        if self.classifier is None:
            raise ValueError("no classifier yet: fit one or load a classifier file")
        return self.classifier

    def _save_bytes(self, folder: Path, filename: str, data: bytes) -> Path:
        """Write ``data`` under ``workdir/folder`` with a name made of a content hash and ``filename``."""
        digest = hashlib.sha256(data).hexdigest()[:12]
        path = self.workdir / folder / f"{digest}-{_UNSAFE.sub('_', Path(filename).name)[-80:]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def _write_upload(self, folder: Path, filename: str, data: bytes) -> Path:
        """:meth:`_save_bytes`, then check that it decodes (a corrupt file is removed and named in the error)."""
        path = self._save_bytes(folder, filename, data)
        try:
            load_audio(path, self.backbone.sample_rate)
        except MediaLoadError as error:
            path.unlink(missing_ok=True)
            raise MediaLoadError(filename, error.reason) from None
        return path

    @contextmanager
    def running(self) -> Iterator[None]:
        """Hold the model for one request; :class:`BusyError` if another one holds it."""
        if not self._lock.acquire(blocking=False):
            raise BusyError("busy: the model is running another request; try again when it ends")
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def idle_after(self, on_progress: Callable[[Progress], None] | None) -> Iterator[None]:
        """Report the stage ``idle`` when the block ends, however it ends."""
        try:
            yield
        finally:
            self.report(on_progress, "idle", self.progress.done, self.progress.total)

    def report(self, on_progress: Callable[[Progress], None] | None, stage: str, done: int, total: int) -> None:
        """Set :attr:`progress` (what ``GET /api/progress`` answers) and pass it to ``on_progress``."""
        self.progress = Progress(stage, done, total)
        if on_progress is not None:
            on_progress(self.progress)


def _unique(name: str, taken: dict[str, Any]) -> str:
    """``name``, or ``name (2)``, ``name (3)`` ... if the class already has a clip of that name."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate
