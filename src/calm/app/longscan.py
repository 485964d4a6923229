"""The "scan a long file" panel of ``calm app``: one long recording, scanned with the app's classifier.

    >>> panel = ScanPanel(session)
    >>> panel.upload("night.flac", chunks)           # streamed to workdir/long, or:
    >>> panel.pick("recordings/night.flac")          # a file under the app's root
    >>> panel.scan(threshold=0.5, background="noise")  # calm.scan -> timeline and events for the page
    >>> panel.audacity_labels()                      # the events in the formats calm scan writes

The scan is :func:`calm.scan` with the session's backbone, classifier and feature store (so a
second scan of the file, e.g. at another threshold, reads the windows back instead of running the
model), holding the session's model lock and reporting seconds of audio to its progress; a stop of
the app cancels it at its next batch. An upload is written to disk as it arrives, never held whole
in memory, and the file is read window by window.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from calm.app.guard import path_under_root
from calm.app.session import AppSession, StoppedError
from calm.media import MediaLoadError
from calm.scanning import FileScan, ScanOptions, scan
from calm.scanning.outputs import audacity_labels, raven_table, write_csv
from calm.scanning.run import default_hop, support_window
from calm.scanning.windows import file_frames

MAX_POINTS = 2000
"""Most time steps of the timeline sent to the page; longer scans are drawn from bins of
consecutive windows, each bin showing the largest probability of each class in it."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class LongFile:
    """The file to scan: where it is, the name the page shows, its length in seconds."""

    path: Path
    name: str
    seconds: float


class ScanPanel:
    """The panel's state: the chosen file, and the last scan (its file, result and options)."""

    def __init__(self, session: AppSession) -> None:
        self.session = session
        self.file: LongFile | None = None
        self.last: tuple[LongFile, FileScan, ScanOptions] | None = None

    def upload(self, filename: str, chunks: Iterable[bytes]) -> LongFile:
        """Write an uploaded recording, chunk by chunk, to ``workdir/long`` (named by its content hash
        and ``filename``) and choose it; :class:`calm.MediaLoadError` naming ``filename`` if it cannot be
        read window by window (the file is then removed)."""
        folder = self.session.workdir / "long"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as handle:
            try:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
            except BaseException:
                os.unlink(handle.name)
                raise
        safe = _UNSAFE.sub("_", Path(filename).name)[-80:]
        path = folder / f"{digest.hexdigest()[:12]}-{safe}"
        os.replace(handle.name, path)
        try:
            return self._choose(path, Path(filename).name)
        except MediaLoadError as error:
            path.unlink(missing_ok=True)
            raise MediaLoadError(filename, error.reason) from None

    def pick(self, spec: str) -> LongFile:
        """Choose a recording of this machine: ``spec`` relative to the app's root (or absolute),
        which it must lie under (:func:`calm.app.guard.path_under_root`)."""
        path = path_under_root(self.session.root, spec)
        if not path.is_file():
            raise ValueError(f"{spec}: a folder; pick one audio file")
        try:
            return self._choose(path, spec.strip())
        except MediaLoadError as error:
            raise MediaLoadError(spec.strip(), error.reason) from None

    def scan(self, threshold: float = 0.5, background: str | None = None, reject: bool = False,
             window: float | None = None, hop: float | None = None) -> dict[str, Any]:
        """Scan the chosen file with the session's classifier (window and hop: as ``calm scan``'s
        defaults when None); the page's view of it (:meth:`view`)."""
        session, file = self.session, self.file
        classifier = session.fitted()
        if file is None:
            raise ValueError("no file to scan yet: upload one or pick one under the app's folder")
        if window is None and not getattr(classifier, "support_seconds_", None):
            raise ValueError("the classifier records no support clip lengths (saved by an older calm): give the "
                             "window in seconds")
        if reject and not session.can_reject():
            raise ValueError("this classifier cannot say unknown: fit it with at least 2 clips per class")
        window = window or support_window(classifier, session.backbone)
        options = ScanOptions(window=window, hop=hop or default_hop(window), threshold=threshold, reject=reject,
                              background=background or None)
        total = round(file.seconds)

        def step(done: float, _: float) -> None:
            if session.stopping.is_set():
                raise StoppedError("the app is stopping: the scan was cancelled")
            session.report(None, "scanning", round(done), total)

        with session.running(), session.idle_after(None):
            session.report(None, "scanning", 0, total)
            result, = scan(session.backbone, classifier, [file.path], options, store=session.workdir / "store",
                           batch_size=session.batch_size, progress=step)
        self.last = file, result, options
        return self.view()

    def view(self) -> dict[str, Any]:
        """The last scan for the page: the file, settings, the timeline (``times``: edges of the
        steps, ``probabilities`` per class, at most :data:`MAX_POINTS` steps) and the events."""
        file, result, options = self._scanned()
        edges, peaks = timeline(result.windows.spans, result.probabilities)
        return {"file": file.name, "seconds": file.seconds, "window": options.window, "hop": options.hop,
                "threshold": options.threshold, "background": options.background, "reject": options.reject,
                "windows": len(result.windows),
                "rejected": None if result.rejected is None else int(result.rejected.sum()),
                "timeline": {"times": edges.round(3).tolist(),
                             "probabilities": {c: peaks[:, k].round(4).tolist() for k, c in enumerate(result.classes)}},
                "events": [{k: v for k, v in e.as_dict().items() if k != "file"} for e in result.events]}

    def events_csv(self) -> str:
        """The last scan's events as ``calm scan``'s events.csv (the file column: the page's name)."""
        handle = io.StringIO()
        write_csv([self._named()], handle)
        return handle.getvalue()

    def audacity_labels(self) -> str:
        return audacity_labels(self._named())

    def raven_table(self) -> str:
        return raven_table(self._named())

    def timeline_png(self, path: str | os.PathLike) -> Path:
        """The last scan drawn by :func:`calm.scanning.timeline.plot_timeline`."""
        from calm.scanning.timeline import plot_timeline  # matplotlib: only when a PNG is asked for

        return plot_timeline(self._named(), path, self._scanned()[2].threshold)

    def stem(self) -> str:
        """A safe file name stem for the downloads of the last scan."""
        return _UNSAFE.sub("_", Path(self._scanned()[0].name).stem)[-60:] or "scan"

    def _choose(self, path: Path, name: str) -> LongFile:
        frames, rate = file_frames(path)
        self.file = LongFile(path, name, frames / rate)
        return self.file

    def _scanned(self) -> tuple[LongFile, FileScan, ScanOptions]:
        if self.last is None:
            raise ValueError("no scan yet: scan a file first")
        return self.last

    def _named(self) -> FileScan:
        """The last scan with the page's name of the file in place of its path."""
        file, result, _ = self._scanned()
        return replace(result, path=file.name, events=[replace(e, file=file.name) for e in result.events])


def timeline(spans: np.ndarray, probabilities: np.ndarray, points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` steps of a scan's timeline: (edges [m + 1], values [m, C]). With more
    windows than ``points``, consecutive windows are binned and each bin keeps each class's largest
    probability (so a one-window peak still shows)."""
    n = len(probabilities)
    if n <= points:
        return spans, probabilities
    starts = np.linspace(0, n, points + 1).round().astype(int)
    return spans[starts], np.maximum.reduceat(probabilities, starts[:-1], axis=0)
