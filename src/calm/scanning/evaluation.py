"""``calm evaluate --task detection``: few-shot event detection scored on long files with reference events.

    >>> setup = DetectionSetup(shots=(5,), seeds=5, options=ScanOptions(background="noise"))
    >>> report = evaluate_detection(backbone, clips, "long/reference.csv", setup, prompt=PROMPT)
    >>> report.summary()[0]["f1"]                      # mean event F1 over the seeds

For each method, shot count K and seed, K clips per class are drawn from the labelled clips
(:func:`calm.data.episodes.sample_support`, so the draws are those of ``calm evaluate``), a
classifier is fitted on them (:func:`calm.predict.fit_classifier`), every long file the reference
names is scanned with it (:func:`calm.scan`) and its events are scored against the reference at
the onset collar (:func:`calm.scanning.scoring.score_scan`: event precision, recall, F1). The
window is the same for every run, the median length of all the labelled clips unless given (so
the windows' features are extracted once, into the store or a temporary one, and each further
run costs a fit and the classifier over stored windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from calm import methods as registry
from calm.backbones.base import Backbone
from calm.data.episodes import sample_support
from calm.data.items import Item
from calm.engine import media_path
from calm.evaluation.detection import COLLAR, DetectionScores, read_events
from calm.media import duration
from calm.predict import fit_classifier
from calm.scanning.run import ScanOptions, default_hop, scan, window_for
from calm.scanning.scoring import score_scan

SCORES = ("f1", "precision", "recall", "macro_f1")


@dataclass(frozen=True)
class DetectionSetup:
    """What to evaluate: ``methods`` (default: :data:`calm.methods.DEFAULT_METHOD`), K ``shots``
    per class, ``seeds`` draws per K (a count, or the seeds), the scan's ``options`` and the onset
    ``collar`` in seconds; and the scan's ``loader_threads`` (the scores do not depend on them)."""

    shots: Sequence[int] = (5,)
    seeds: int | Sequence[int] = 5
    methods: Sequence[str] | None = None
    options: ScanOptions = field(default_factory=ScanOptions)
    collar: float = COLLAR
    loader_threads: int | None = None


@dataclass(frozen=True)
class DetectionRun:
    """One fit and scan: its method, K, seed and scores."""

    method: str
    shots: int
    seed: int
    scores: DetectionScores


@dataclass
class DetectionReport:
    """Every run, and the configuration they share (files, events, window, hop, threshold ...)."""

    runs: list[DetectionRun]
    config: dict[str, Any]

    def summary(self) -> list[dict[str, Any]]:
        """Per method and K: the mean and standard deviation over the seeds of each of :data:`SCORES`."""
        rows = []
        for method, shots in dict.fromkeys((r.method, r.shots) for r in self.runs):
            runs = [r for r in self.runs if (r.method, r.shots) == (method, shots)]
            row: dict[str, Any] = {"method": method, "shots": shots, "seeds": len(runs)}
            for name in SCORES:
                values = [r.scores.macro_f1 if name == "macro_f1" else getattr(r.scores.overall, name) for r in runs]
                row[name], row[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
            rows.append(row)
        return rows

    def markdown(self) -> str:
        c = self.config
        lines = [f"# Event detection: {c['events']} reference events in {len(c['files'])} file(s), "
                 f"{c['minutes']:.1f} min", "",
                 f"Window {c['window']:g} s, hop {c['hop']:g} s, threshold {c['threshold']:g}, background "
                 f"{c['background'] or 'none'}, rejection {'on' if c['reject'] else 'off'}; onset collar "
                 f"{c['collar']:g} s; mean ± std over the seeds.", "",
                 "| method | shots | F1 | precision | recall | macro F1 |", "|---|---|---|---|---|---|"]
        for row in self.summary():
            lines.append(f"| {row['method']} | {row['shots']} | "
                         + " | ".join(f"{row[n]:.3f} ± {row[n + '_std']:.3f}" for n in SCORES) + " |")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "summary": self.summary(),
                "runs": [{"method": r.method, "shots": r.shots, "seed": r.seed, **r.scores.as_dict()}
                         for r in self.runs]}

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """``report.json`` (every run's scores, per class too, and the configuration) and ``report.md``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"json": folder / "report.json", "md": folder / "report.md"}
        paths["json"].write_text(json.dumps(self.as_dict(), indent=1) + "\n")
        paths["md"].write_text(self.markdown())
        return paths


def evaluate_detection(backbone: Backbone, items: Sequence[Item], reference: str | os.PathLike,
                       setup: DetectionSetup | None = None, *, prompt: str, store: Any = None, batch_size: int = 8,
                       progress: bool = False) -> DetectionReport:
    """Score few-shot event detection (see the module docstring); ``reference`` is a CSV of
    ``file, onset, offset, label`` (files relative to it), ``items`` the labelled clips to draw the
    support from. ValueError, before any model runs, for a reference without files, a class with
    fewer clips than a shot count, or a background class with no clips."""
    setup = setup or DetectionSetup()
    spans = read_events(reference)
    files = sorted({s.file for s in spans})
    labelled = [i for i in items if i.label is not None]
    seeds, methods = check_detection(labelled, spans, setup)
    options = setup.options
    window = options.window or window_for([duration(media_path(i)) for i in labelled], backbone)
    options = replace(options, window=window, hop=options.hop or default_hop(window))
    config = {"reference": str(reference), "files": files, "events": len(spans),
              "minutes": sum(duration(f) for f in files) / 60, "prompt": prompt, "model": backbone.model_id,
              "methods": methods, "shots": sorted(set(setup.shots)), "seeds": seeds, "collar": setup.collar,
              **{k: v for k, v in asdict(options).items() if k != "on_error"}}
    runs = []
    with tempfile.TemporaryDirectory(prefix="calm-detection-") as scratch:
        store = store if store is not None else Path(scratch) / "store"
        for method in methods:
            for shots in sorted(set(setup.shots)):
                for seed in seeds:
                    support = sample_support(labelled, shots, seed)
                    clf = fit_classifier(backbone, support, prompt, method, batch_size=batch_size, store=store)
                    scanned = scan(backbone, clf, files, options, store=store, batch_size=batch_size,
                                   loader_threads=setup.loader_threads, progress=progress and not runs)
                    runs.append(DetectionRun(method, shots, seed, score_scan(scanned, reference, setup.collar)))
    return DetectionReport(runs, config)


def check_detection(items: Sequence[Item], spans: Sequence[Any], setup: DetectionSetup) -> tuple[list[int], list[str]]:
    """What :func:`evaluate_detection` can check before any model loads (see there); the seeds and
    the methods of ``setup``."""
    seeds = list(range(setup.seeds)) if isinstance(setup.seeds, int) else [int(s) for s in setup.seeds]
    methods = list(setup.methods) if setup.methods else [registry.DEFAULT_METHOD]
    if not spans:
        raise ValueError("the reference lists no events")
    features = registry.names(feature_only=True)
    for name in methods:
        registry.get(name)  # ValueError naming the known methods
        if name not in features:
            raise ValueError(f"method {name!r} does not fit on head features; detection needs one of {features}")
    if not seeds or not setup.shots:
        raise ValueError("need at least one shot count and one seed")
    classes = {str(i.label) for i in items}
    background = setup.options.background
    if background is not None and background not in classes:
        raise ValueError(f"background class {background!r} has no clips among the labelled clips "
                         f"({', '.join(sorted(classes))})")
    for shots in setup.shots:
        sample_support(items, shots, seeds[0])  # ValueError naming a class with too few clips
    return seeds, methods
