"""The choices that both the library and the CLI offer, in one light module (it imports nothing),
so that the CLI's ``choices=`` come from the same source as the library's checks without
``calm --help`` importing torch. Extending a list here extends both."""

from __future__ import annotations

TASKS = ("multiclass", "spoof", "multilabel")
"""Evaluation tasks (:mod:`calm.evaluation.protocol`); ``calm evaluate --task``."""

ON_ERROR = ("raise", "record")
"""What a file that cannot be loaded does: stop the run, or be recorded as failed; ``--on-error``."""

ORDERS = ("input", "store")
"""Row orders of extracted features (:class:`calm.engine.ExtractionConfig`)."""
