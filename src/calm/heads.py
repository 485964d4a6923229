"""The extraction loop: per-head attention outputs at the last prompt token, for many clips.

For each batch, one forward pass runs under ``torch.inference_mode`` with a forward pre-hook on
every site's output projection. The hook reads the projection's input at each row's last real
token (found from the attention mask, so left and right padding both work) and keeps only that
[B, H*D] slice on the device; after the pass the slices of all sites are stacked to [B, K, D] and
copied to the CPU once. The LM head never runs (see :meth:`calm.backbones.Backbone.forward`), and
``stop_after_last_site=True`` ends the pass as soon as the last site has been read.

Items are grouped by duration so that a batch pads little; the result keeps the input order (or,
with ``order="store"``, the order of the store's rows).
While the model runs a batch, background threads decode the next ones in parallel and build their
inputs (decoding, resampling and the processor's CPU work overlap the forward pass).
With a store, items already in it are skipped and every finished batch is appended (durable), so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.capture import HeadCapture
from calm.data.items import Item
from calm.data.loaders import media_item
from calm.features import HeadFeatures
from calm.media import MediaLoadError, content_hash, duration, load_audio, load_video
from calm.store import FeatureStore

ON_ERROR = ("raise", "record")
ORDERS = ("input", "store")

D = TypeVar("D")
R = TypeVar("R")

MAX_LOADER_THREADS = 4


def default_loader_threads() -> int:
    """Loader threads for this machine: one core fewer than it gives this process, at most
    :data:`MAX_LOADER_THREADS` (so 0 on one core and 1 on two: decoding never takes a core the
    model needs; measured in ``docs/benchmarks.md``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_LOADER_THREADS, cores - 1))


def as_items(items: Sequence[Item | str | os.PathLike]) -> list[Item]:
    """Items as given; a path becomes an unlabelled item whose id is the path."""
    return [item if isinstance(item, Item) else media_item(str(item), Path(item), None) for item in items]


def item_content(items: Sequence[Item]) -> dict[str, str]:
    """Item id -> SHA-256 of the file whose audio is used, for the items whose file can be read."""
    content = {}
    for item in items:
        try:
            content[item.id] = content_hash(media_path(item))
        except MediaLoadError:
            continue
    return content


def feature_fingerprint(backbone: Backbone, prompt: str) -> dict[str, Any]:
    """Everything that determines a feature: the backbone's fingerprint, the prompt, the sites."""
    return {**backbone.fingerprint(), "prompt": prompt, "sites": backbone.site_names()}


def extract(
    backbone: Backbone,
    items: Sequence[Item | str | os.PathLike],
    prompt: str,
    batch_size: int = 8,
    store: Any = None,
    on_error: str = "raise",
    progress: bool = False,
    *,
    stop_after_last_site: bool = False,
    dtype: Any = np.float16,
    loader_threads: int | None = None,
    order: str = "input",
) -> HeadFeatures:
    """Head features of ``items`` under ``prompt`` (one forward pass per batch).

    Args:
        backbone: from :func:`calm.load_backbone` (or :func:`calm.backbones.tiny.tiny_backbone`).
        items: clips (:class:`~calm.data.items.Item`, or file paths: unlabelled, the path as id);
            ``item.audio`` (or, without it, ``item.video``'s audio track) is loaded at the
            backbone's rate; ``item.video`` frames go to backbones that take video. Clips shorter
            than ``backbone.min_seconds`` are padded with silence to it, and clips longer than the
            model's window are cut (a warning says how many of each); empty clips fail.
        prompt: the user text (rendered with the backbone's chat template).
        batch_size: clips per forward pass.
        store: None, a directory, or an open :class:`calm.store.FeatureStore`: stored items are
            skipped and each finished batch is appended.
        on_error: ``"raise"`` lets a loading error (naming the file) propagate; ``"record"`` lists
            the item in ``failed`` (and in the store) and goes on. Failed items are never dropped
            silently. An item whose features come out NaN or infinite (corrupt audio) fails the
            same way; the rest of its batch is kept.
        progress: show a progress bar (clips/s, ETA).
        stop_after_last_site: end each pass right after the last site (skips later layers).
        loader_threads: threads that decode clips in parallel while the model runs, the next
            batches' inputs built meanwhile (0: everything inline; None: :func:`default_loader_threads`,
            from the core count). Results and failures are the same for every value.
        order: ``"input"``: rows in the order of ``items``; ``"store"`` (with a store): in the
            order they were stored, so that rows stored together stay memory-mapped instead of
            being gathered into memory (for large datasets; match rows to items by ``ids``).
        dtype: dtype of the returned ``X`` without a store (float16 by default; float32 for exact
            comparisons). With a store, ``X`` is read back from it (float16, memory-mapped).

    Returns:
        HeadFeatures with the items that succeeded (in the ``order`` asked) and ``failed``: id -> reason.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if loader_threads is None:
        loader_threads = default_loader_threads()
    if loader_threads < 0:
        raise ValueError(f"loader_threads must be at least 0, got {loader_threads}")
    items = as_items(items)
    duplicates = sorted(i for i, n in Counter(item.id for item in items).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate item ids: {duplicates[:5]}")
    fingerprint = feature_fingerprint(backbone, prompt)
    heads = backbone.head_index()
    with _opened(store, fingerprint, heads) as feature_store:
        if feature_store is not None:
            feature_store.lock()  # one writer; what is stored is read after taking the lock
        run = _Run(backbone, prompt, feature_store, on_error, stop_after_last_site, np.dtype(dtype))
        run.hash_items(items)
        pending = [item for item in items if item.id in run.keys and run.keys[item.id] not in run.done]
        if pending:  # nothing to run: a deferred backbone (calm.backbones.loading) loads no weights
            run.process(pending, batch_size, progress, loader_threads)
        finished = [item.id for item in items if item.id not in run.failed]
        if feature_store is not None:
            stored = feature_store.read(item_keys=[run.keys[i] for i in finished], in_store_order=order == "store")
            X, finished = stored.X, stored.ids
        elif finished:
            X = np.stack([run.rows[i] for i in finished])
        else:
            X = np.zeros((0, len(heads), backbone.sites[0].head_dim), dtype=dtype)
    content = {i: run.content[i] for i in finished if i in run.content}
    return HeadFeatures(X, heads, finished, fingerprint, dict(run.failed), content)


@contextmanager
def _opened(store: Any, fingerprint: dict[str, Any], heads: Any) -> Iterator[Any]:
    if store is None or not isinstance(store, (str, os.PathLike)):
        yield store
        return
    opened = FeatureStore.open(store, key=fingerprint, heads=heads)
    try:
        yield opened
    finally:
        opened.close()


class _Run:
    """State of one extraction: store keys, failures, in-memory rows."""

    def __init__(
        self, backbone: Backbone, prompt: str, store: Any, on_error: str, stop: bool, dtype: np.dtype
    ) -> None:
        self.backbone = backbone
        self.prompt = prompt
        self.store = store
        self.on_error = on_error
        self.stop = stop
        self.dtype = dtype
        self.done: set[str] = store.done_keys() if store is not None else set()
        self.keys: dict[str, str] = {}
        self.items: dict[str, Item] = {}
        self.content: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        self._video_warned = False

    def fail(self, item: Item, error: Exception) -> None:
        """Raise, or record the failure (here and in the store)."""
        if self.on_error == "raise":
            raise error
        reason = str(error)
        self.failed[item.id] = reason
        if self.store is not None:
            key = self.keys.get(item.id) or self.store.item_key(item.id, "unhashed")
            self.store.record_failure(key, item.id, reason)

    def hash_items(self, items: Sequence[Item]) -> None:
        """Item id -> store key from the content hashes of its files (without a store: the id)."""
        self.items.update((item.id, item) for item in items)
        for item in items:
            if self.store is None:
                self.keys[item.id] = item.id
                continue
            try:
                video = content_hash(item.video) if self.uses_video(item) else None
                self.content[item.id] = content_hash(media_path(item))
                self.keys[item.id] = self.store.item_key(item.id, self.content[item.id], video)
            except MediaLoadError as error:
                self.fail(item, error)

    def uses_video(self, item: Item) -> bool:
        """Whether the item's video frames go to the model (warns once when the backbone takes none)."""
        if item.video is None:
            return False
        if self.backbone.supports_video:
            return True
        if not self._video_warned:
            warnings.warn(f"{self.backbone.family} backbones take no video; using only the audio of "
                          f"{item.id} and other video items", stacklevel=4)
            self._video_warned = True
        return False

    def process(self, items: Sequence[Item], batch_size: int, progress: bool, loader_threads: int) -> None:
        """Batches of similar duration (video and audio-only items apart), one pass each."""
        batches = self.plan(items, batch_size)
        bar = _progress_bar(sum(len(batch) for batch in batches)) if progress else None
        loads = closing(_loaded_batches(batches, self._decode, self._build, loader_threads))
        with HeadCapture(self.backbone, self.stop) as capture, loads as loaded_batches:
            for batch, loaded in zip(batches, loaded_batches):
                for item, error in loaded.failures:
                    self.fail(item, error)
                if loaded.items:
                    self.keep([item.id for item in loaded.items], self.run_pass(loaded, capture))
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()

    def plan(self, items: Sequence[Item], batch_size: int) -> list[list[Item]]:
        """The batches of ``items``: sorted by duration, video and audio-only items apart. Items
        whose duration cannot be read, or that hold no audio, fail (see :meth:`fail`); clips
        shorter than the backbone's minimum (padded when loaded) and past the model's window (cut)
        are counted in one warning each."""
        window, shortest, too_long, too_short = self.backbone.window_seconds, self.backbone.min_seconds, [], []
        for item in items:
            try:
                seconds = self.seconds[item.id] = duration(media_path(item))
                if seconds <= 0:
                    raise MediaLoadError(media_path(item), "holds no audio samples")
            except ValueError as error:
                self.seconds.pop(item.id, None)
                self.fail(item, error)
                continue
            if window is not None and seconds > window + 1e-3:
                too_long.append(item.id)
            if seconds < shortest:
                too_short.append(item.id)
        if too_long:
            warnings.warn(f"{len(too_long)} clip(s) are longer than the model's {window:g} s window and were cut to "
                          f"it (only their first {window:g} s count), e.g. {too_long[0]}", stacklevel=5)
        if too_short:
            warnings.warn(f"{len(too_short)} clip(s) are shorter than {shortest:g} s, the least the "
                          f"{self.backbone.family} audio encoder takes, and were padded with silence to it, e.g. "
                          f"{too_short[0]}", stacklevel=5)
        todo = sorted((item for item in items if item.id in self.seconds),
                      key=lambda item: (self.uses_video(item), self.seconds[item.id]))
        batches: list[list[Item]] = []
        start = 0
        while start < len(todo):
            group = self.uses_video(todo[start])
            batches.append([item for item in todo[start:start + batch_size] if self.uses_video(item) == group])
            start += len(batches[-1])
        return batches

    def load_batch(self, batch: Sequence[Item], threads: int = 0) -> _LoadedBatch:
        """Decode (in ``threads`` threads) and build one batch from :meth:`plan`; records nothing.
        With :meth:`run_pass`, what a worker of :mod:`calm.distributed` runs."""
        with closing(_loaded_batches([batch], self._decode, self._build, threads)) as loaded:
            return next(loaded)

    def run_pass(self, loaded: _LoadedBatch, capture: HeadCapture) -> np.ndarray:
        """The forward pass of a built batch: its [B, K, D] float32 rows; records nothing."""
        with torch.inference_mode():
            capture.expect(self.backbone.token_mask(loaded.inputs))
            self.backbone.forward(loaded.inputs)
            return capture.collect().numpy()

    def keep(self, ids: Sequence[str], X: np.ndarray) -> None:
        """Keep (or store) the rows of a batch's items; an item whose row is not finite in float16
        fails instead, and the rest of the batch is kept. Rows of items already stored are not
        stored again."""
        with np.errstate(over="ignore"):
            half = np.asarray(X).astype(np.float16)  # what the store keeps: cast once
        finite = np.isfinite(half).reshape(len(X), -1).all(axis=1)
        for item_id in [i for i, ok in zip(ids, finite) if not ok]:
            item = self.items[item_id]
            self.fail(item, MediaLoadError(media_path(item), "its features are not finite (NaN, inf or beyond "
                                                             "float16): the audio is probably corrupt"))
        kept = [i for i, ok in zip(ids, finite) if ok]
        if not kept:
            return
        if self.store is not None:
            self.store.append([self.keys[i] for i in kept], kept, half[finite])
            self.done.update(self.keys[i] for i in kept)
        else:
            self.rows.update(zip(kept, X[finite].astype(self.dtype)))

    def _decode(self, item: Item) -> tuple[np.ndarray, Any] | ValueError:
        """The item's audio (and video frames, or None), or the loading error (thread-safe)."""
        try:
            audio = pad_to_minimum(load_audio(media_path(item), self.backbone.sample_rate), self.backbone)
            video = load_video(item.video, self.backbone.video_frames(self.seconds[item.id])) \
                if self.uses_video(item) else None
            return audio, video
        except ValueError as error:  # MediaLoadError
            return error

    def _build(self, batch: Sequence[Item], decoded: Sequence[tuple[np.ndarray, Any] | ValueError]) -> _LoadedBatch:
        """Model inputs of the items that decoded; the others with their errors (records nothing)."""
        loaded = [(item, clip) for item, clip in zip(batch, decoded) if not isinstance(clip, ValueError)]
        failures = [(item, error) for item, error in zip(batch, decoded) if isinstance(error, ValueError)]
        videos = [video for _, (_, video) in loaded if video is not None]
        inputs = self.backbone.build_inputs([audio for _, (audio, _) in loaded], self.prompt,
                                            videos=videos or None) if loaded else None
        return _LoadedBatch([item for item, _ in loaded], failures, inputs)


def pad_to_minimum(audio: np.ndarray, backbone: Backbone) -> np.ndarray:
    """``audio`` with trailing silence up to ``backbone.min_seconds`` (unchanged if already as long)."""
    missing = math.ceil(backbone.min_seconds * backbone.sample_rate) - len(audio)
    return np.pad(audio, (0, missing)) if missing > 0 else audio


@dataclass
class _LoadedBatch:
    """A decoded batch: the items that loaded, those that failed (with the error), model inputs."""

    items: list[Item]
    failures: list[tuple[Item, ValueError]]
    inputs: Any


BATCHES_AHEAD = 2
"""Batches decoded and built ahead of the one the model runs (with loader threads)."""


def _loaded_batches(
    batches: Sequence[Sequence[Item]],
    decode: Callable[[Item], D],
    build: Callable[[Sequence[Item], list[D]], R],
    threads: int,
) -> Iterator[R]:
    """``build(batch, [decode(item) ...])`` for each batch, in order. With ``threads`` > 0, items
    are decoded by that many threads in parallel (decoders release the GIL) and inputs built by one
    more (processors' tokenizers are not safe to call concurrently), up to :data:`BATCHES_AHEAD`
    batches ahead of the consumer. Closing the generator cancels what has not started."""
    if threads == 0:
        for batch in batches:
            yield build(batch, [decode(item) for item in batch])
        return
    decoders = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="calm-decode")
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calm-inputs")
    pending: deque[Future[R]] = deque()
    try:
        for batch in batches:
            clips = [decoders.submit(decode, item) for item in batch]
            pending.append(builder.submit(lambda b=batch, c=clips: build(b, [f.result() for f in c])))
            if len(pending) > BATCHES_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        builder.shutdown(wait=True, cancel_futures=True)
        decoders.shutdown(wait=True, cancel_futures=True)


def media_path(item: Item) -> Any:
    """The file whose audio is used (:attr:`Item.media_path`), or a MediaLoadError naming the item."""
    if item.media_path is None:
        raise MediaLoadError(f"<item {item.id}>", "item has neither an audio nor a video file")
    return item.media_path


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="extract", smoothing=0.1)
