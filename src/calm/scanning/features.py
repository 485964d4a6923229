"""Head features of windows of long files, batch by batch, through the backbone's own inputs and
forward pass (its fast path included), with an optional feature store.

A window is decoded on its own (:func:`calm.scanning.windows.read_window`), padded to the
backbone's shortest clip like any clip (:func:`calm.clips.pad_to_length`), and its heads read by
the same capture as :func:`calm.extract` (:func:`calm.engine.forward_heads`), so a window's
features are those of the same stretch cut to its own file and extracted. Rows are kept as float16
(what a store holds), so a scan gives the same numbers with or without a store.

In a store, a window is keyed by the file's content hash, its first frame and its frame count:
a rerun, or a second classifier on the same backbone and prompt over the same windows, reads them
back instead of running the model. The store is the one :func:`calm.extract` uses for these
features (same key), so clips and windows of one model and prompt share it.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from calm.backbones.base import Backbone
from calm.capture import HeadCapture
from calm.features import HeadFeatures
from calm.clips import default_loaders, min_samples, pad_to_length
from calm.engine import feature_fingerprint, forward_heads
from calm.media import MediaLoadError
from calm.scanning.windows import Windows, read_window
from calm.store import FeatureStore

T = TypeVar("T")

AHEAD = 2
"""Batches decoded and built ahead of the one the model runs (with a loader thread)."""


def window_id(content: str, start: int, frames: int, rate: int) -> str:
    """A window's name: the file's content hash, first frame, frame count and the file's rate."""
    return f"{content}@{start}+{frames}/{rate}"


class WindowExtractor:
    """Features of windows, batch by batch; use as a context manager (holds the capture hooks and
    the store's write lock)."""

    def __init__(self, backbone: Backbone, prompt: str, store: Any = None, batch_size: int = 8,
                 loader_threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.backbone, self.prompt, self.batch_size = backbone, prompt, batch_size
        self.loader_threads = default_loaders() if loader_threads is None else loader_threads
        if self.loader_threads < 0:
            raise ValueError(f"loader_threads must be at least 0, got {self.loader_threads}")
        self.fingerprint = feature_fingerprint(backbone, prompt)
        self.heads = backbone.head_index()
        self._store_arg = store
        self._stack = ExitStack()
        self.store: FeatureStore | None = None
        self.capture: HeadCapture | None = None
        self.computed = 0
        """Windows run through the model (the others came from the store)."""

    def __enter__(self) -> "WindowExtractor":
        store = self._store_arg
        if isinstance(store, (str, os.PathLike)):
            store = self._stack.enter_context(FeatureStore.open(store, key=self.fingerprint, heads=self.heads))
        if store is not None:
            store.lock()
        self.store = store
        self.capture = self._stack.enter_context(HeadCapture(self.backbone))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def batches(self, path: str | os.PathLike, windows: Windows, content: str) -> Iterator[HeadFeatures]:
        """The features of ``windows`` of ``path`` (whose SHA-256 is ``content``), one
        HeadFeatures of up to ``batch_size`` windows at a time, in window order."""
        if self.capture is None:
            raise RuntimeError("use WindowExtractor as a context manager")
        spans = zip(windows.starts.tolist(), windows.lengths.tolist())
        ids = [window_id(content, start, n, windows.rate) for start, n in spans]
        keys = [FeatureStore.item_key(i, content) for i in ids]
        done = self.store.done_keys() if self.store is not None else set()
        bounds = [(a, min(a + self.batch_size, len(ids))) for a in range(0, len(ids), self.batch_size)]

        def job(a: int, b: int) -> Callable[[], Any]:
            todo = [i for i in range(a, b) if keys[i] not in done]
            return lambda: (todo, self._inputs(path, windows, todo) if todo else None)

        for (a, b), (todo, inputs) in zip(bounds, prefetched([job(a, b) for a, b in bounds], self.loader_threads)):
            rows = np.zeros((b - a, len(self.heads), self.backbone.sites[0].head_dim), dtype=np.float16)
            if todo:
                with np.errstate(over="ignore"):
                    computed = forward_heads(self.backbone, self.capture, inputs).astype(np.float16)
                bad = [i for i, row in zip(todo, computed) if not np.isfinite(row).all()]
                if bad:
                    at = windows.starts[bad[0]] / windows.rate
                    raise MediaLoadError(path, f"the features of the window at {at:.3f} s are not finite (NaN, inf or "
                                               "beyond float16): the audio there is probably corrupt")
                rows[[i - a for i in todo]] = computed
                self.computed += len(todo)
                if self.store is not None:
                    self.store.append([keys[i] for i in todo], [ids[i] for i in todo], computed)
            stored = [i for i in range(a, b) if keys[i] in done]
            if stored:
                rows[[i - a for i in stored]] = self.store.read(item_keys=[keys[i] for i in stored]).X
            yield HeadFeatures(rows, self.heads, ids[a:b], dict(self.fingerprint))

    def _inputs(self, path: str | os.PathLike, windows: Windows, todo: Sequence[int]) -> Any:
        shortest = min_samples(self.backbone.min_seconds, self.backbone.sample_rate)
        clips = [pad_to_length(read_window(path, int(windows.starts[i]), int(windows.lengths[i]),
                                           self.backbone.sample_rate), shortest) for i in todo]
        return self.backbone.build_inputs(clips, self.prompt)


def prefetched(jobs: Sequence[Callable[[], T]], threads: int) -> Iterator[T]:
    """``job()`` for each job, in order; with ``threads`` > 0, run by one background thread up to
    :data:`AHEAD` jobs ahead of the consumer (decoding and input building overlap the model)."""
    if threads == 0:
        for job in jobs:
            yield job()
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calm-scan")
    pending: deque[Future[T]] = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) > AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
