"""The choices that both the library and the CLI offer, in one light module (it imports nothing),
so that the CLI's ``choices=`` come from the same source as the library's checks without
``calm --help`` importing torch. Extending a list here extends both."""

from __future__ import annotations

TASKS = ("multiclass", "spoof", "multilabel")
"""Clip evaluation tasks (:mod:`calm.evaluation.protocol`)."""

EVALUATE_TASKS = (*TASKS, "detection")
"""``calm evaluate --task``: the clip tasks, and events in long files (:mod:`calm.scanning.evaluation`)."""

ON_ERROR = ("raise", "record")
"""What a file that cannot be loaded does: stop the run, or be recorded as failed; ``--on-error``."""

ORDERS = ("input", "store")
"""Row orders of extracted features (:class:`calm.engine.ExtractionConfig`)."""
