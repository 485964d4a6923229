"""``calm demo``: the whole method on real weights and real recordings, offline, on a CPU.

Two tasks built from Debian packages (:mod:`calm.devdata.speech`): spoken numbers (support spoken by
many espeak-ng voices, queries by the human Asterisk speakers) and spoofing (bona fide human
speech vs espeak-ng). Features come from the offline Whisper base
(:mod:`calm.backbones.ct2_whisper`), extracted once into a feature store, so a rerun only
refits the classifiers. Whisper answers no questions, so the demo has no zero-shot or
pseudo-label rows: those need a chat LALM such as Qwen2-Audio.

Every demo clip lasts at most 5 s, so the Whisper encoder runs on a 5 s window
(``encoder_seconds``, see :mod:`calm.backbones.whisper`) instead of 30 s of padding: about 8x
less encoder work on a CPU, with features that differ from the 30 s reference (measured in
``docs/benchmarks.md``). ``encoder_seconds=None`` gives the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from calm.cache import cache_dir
from calm.config import configured
from calm.evaluation.config import EvaluationConfig


@dataclass(frozen=True)
class DemoTask:
    """One demo task: the recipe that builds its data and the prompt its features are read under."""

    recipe: str
    prompt: str
    shots: tuple[int, ...]


DEMO_TASKS: tuple[DemoTask, ...] = (
    DemoTask("spoken-numbers", prompt="Someone says a number.", shots=(1, 4, 16)),
    DemoTask("spoof", prompt="A short recording of speech.", shots=(1, 4, 16)),
)


DEMO_SETTINGS = dict(seeds=5, batch_size=16, trust=False, zero_shot=False, pseudo_label=False)
"""The demo's evaluation settings where they differ from :class:`~calm.evaluation.config.EvaluationConfig`'s
defaults (Whisper answers no questions, so no zero-shot or pseudo-label rows; trust is opt-in on a CPU)."""


def run_demo(out_dir: str | Path = "runs/demo", model: str = "whisper-base", tasks: Sequence[DemoTask] = DEMO_TASKS,
             *, encoder_seconds: float | None = 5.0, loaders: int | None = None, progress: bool = True,
             config: EvaluationConfig | None = None, **options: Any) -> dict[str, Any]:
    """Prepare the demo data (if missing), extract, evaluate every method and write one report per
    task under ``out_dir``. ``config`` (its shots replaced by each task's), or keyword ``options``
    over :data:`DEMO_SETTINGS`: ``seeds``, ``methods`` (default every registered method that needs
    no chat model), ``trust`` (adds the calibration, open-set and prediction-set metrics: each
    method is then refit on folds of its support, minutes more on a CPU) ... ``encoder_seconds``:
    the encoder window of a backbone that has one (None: the reference); ``loaders``: loader
    processes (:class:`calm.backbones.BackboneOptions`). Returns task name -> EvaluationReport."""
    from calm.backbones import load_backbone  # torch and soundfile: not when the CLI starts (it imports this)
    from calm.data.loaders import load_dataset
    from calm.devdata.recipes import RECIPES
    from calm.evaluation.protocol import evaluate

    config = configured(EvaluationConfig, config, options if config is not None else {**DEMO_SETTINGS, **options},
                        "run_demo")
    out = Path(out_dir)
    backbone = load_backbone(model, loaders=loaders)
    if backbone.has_encoder_window and encoder_seconds is not None:
        backbone = backbone.with_options(encoder_seconds=encoder_seconds)
    reports: dict[str, Any] = {}
    for task in tasks:
        started = time.perf_counter()
        metadata = RECIPES[task.recipe](cache_dir("data", task.recipe))
        items = load_dataset(metadata)
        report = evaluate(backbone, items, prompt=task.prompt, config=replace(config, shots=task.shots),
                          store=cache_dir("features"), progress=progress)
        report.write(out / task.recipe)
        reports[task.recipe] = report
        print(f"\n## {task.recipe} ({len(items)} clips, {time.perf_counter() - started:.0f} s)\n")
        print(report.markdown())
    print(f"\nReports written under {out}/")
    return reports
