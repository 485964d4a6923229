"""Open-set rejection and prediction sets end to end on real weights and recordings: the offline
Whisper base and the spoken-numbers demo data. A calibrated CALM is fitted on TTS clips of eight
numbers (three left out) through :func:`calm.predict.fit_classifier`, and
:func:`calm.predict.predict_files` (what ``calm predict --reject --sets`` runs) labels new TTS clips
of all eleven: most clips of the left-out numbers come back ``unknown``, far more than of the
known ones, and no clip is dropped. Human recordings of the known numbers, unlike the TTS support,
are flagged by the shift check."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from calm.backbones import load_backbone
from calm.cache import cache_dir
from calm.classifiers.typicality import ShiftWarning
from calm.data.loaders import load_dataset
from calm.devdata.recipes import RECIPES
from calm.predict import fit_classifier, predict_files

pytestmark = pytest.mark.slow

LEFT_OUT = ("3", "4", "5")
SHOTS = 16
NEW_PER_CLASS = 6


def test_left_out_numbers_are_mostly_rejected():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        items = load_dataset(RECIPES["spoken-numbers"](cache_dir("data", "spoken-numbers")))
        tts = sorted((i for i in items if i.fold == "support"), key=lambda i: i.id)
        random.Random(0).shuffle(tts)  # ids follow the voices: draw support and new clips alike
        by_class: dict[str, list] = {}
        for item in tts:
            by_class.setdefault(item.label, []).append(item)
        support = [i for label, group in by_class.items() if label not in LEFT_OUT for i in group[:SHOTS]]
        new = [i for group in by_class.values() for i in group[SHOTS:SHOTS + NEW_PER_CLASS]]
        backbone = load_backbone("whisper-base", encoder_seconds=5.0)  # as the demo: its store holds the support
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = fit_classifier(backbone, support, "Someone says a number.", "calm", batch_size=16,
                                 store=cache_dir("features"), target_frr=0.2)
        rows = predict_files(backbone, clf, [i.audio for i in new], batch_size=16, reject=True, sets=0.9)
        human = [i for i in sorted(items, key=lambda i: i.id) if i.fold == "query" and i.label not in LEFT_OUT][::2]
        with pytest.warns(ShiftWarning, match="unlike the support set"):
            human_rows = predict_files(backbone, clf, [i.audio for i in human], batch_size=16, sets=0.9)
    finally:
        torch.set_num_threads(threads)
    assert [r.path for r in rows] == [str(i.audio) for i in new]  # every clip keeps its row, in order
    unknown = [r for r, i in zip(rows, new) if i.label in LEFT_OUT]
    known = [r for r, i in zip(rows, new) if i.label not in LEFT_OUT]
    unknown_rejected = sum(r.label == "unknown" for r in unknown) / len(unknown)
    known_rejected = sum(r.label == "unknown" for r in known) / len(known)
    print(f"rejected: {unknown_rejected:.2f} of left-out, {known_rejected:.2f} of known clips")
    assert unknown_rejected > 0.5 and unknown_rejected > known_rejected + 0.25, (unknown_rejected, known_rejected)
    covered = [i.label in r.prediction_set for r, i in zip(known, (i for i in new if i.label not in LEFT_OUT))]
    assert sum(covered) / len(covered) >= 0.75  # 90% sets on in-domain clips of known numbers
    known_typicality = sum(r.typicality for r in known) / len(known)
    human_typicality = sum(r.typicality for r in human_rows) / len(human_rows)
    assert known_typicality > human_typicality + 0.2, (known_typicality, human_typicality)
