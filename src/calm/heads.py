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

import os
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from calm.audio import AudioLoadError, content_hash, duration, load_audio
from calm.backbones.base import Backbone, StopForward
from calm.data.items import Item
from calm.features import HeadFeatures
from calm.store import FeatureStore
from calm.video import load_video

ON_ERROR = ("raise", "record")
ORDERS = ("input", "store")

D = TypeVar("D")
R = TypeVar("R")


def feature_fingerprint(backbone: Backbone, prompt: str) -> dict[str, Any]:
    """Everything that determines a feature: the backbone's fingerprint, the prompt, the sites."""
    return {**backbone.fingerprint(), "prompt": prompt, "sites": backbone.site_names()}


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a [B, T] mask (left or right padding)."""
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("a row of the attention mask has no real token")
    return mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)


class HeadCapture:
    """Forward pre-hooks on the sites' output projections that keep the last real token's input.

    Use as a context manager around forward passes; before each pass call :meth:`expect` with the
    batch's token mask, after it :meth:`collect` for the [B, K, D] float32 CPU tensor.
    """

    def __init__(self, backbone: Backbone, stop_after_last_site: bool = False) -> None:
        self.sites = backbone.sites
        self.stop_after_last_site = stop_after_last_site
        self._handles: list[Any] = []
        self._last: torch.Tensor | None = None
        self._length = 0
        self._captured: dict[int, torch.Tensor] = {}

    def __enter__(self) -> "HeadCapture":
        for index, site in enumerate(self.sites):
            self._handles.append(site.proj.register_forward_pre_hook(self._hook(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def expect(self, mask: torch.Tensor) -> None:
        """Arm the hooks for a batch whose token sequence has this [B, T] mask."""
        self._last = last_token_index(mask)
        self._length = mask.shape[1]
        self._captured = {}

    def _hook(self, index: int):
        site = self.sites[index]

        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if self._last is None:
                return
            hidden = args[0]
            if index in self._captured:
                raise RuntimeError(f"{site.name}: output projection ran twice in one forward pass")
            if hidden.dim() != 3 or hidden.shape[0] != self._last.shape[0] or hidden.shape[1] != self._length:
                raise RuntimeError(
                    f"{site.name}: projection input has shape {tuple(hidden.shape)}, expected "
                    f"[{self._last.shape[0]}, {self._length}, ...] from the attention mask"
                )
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            self._captured[index] = hidden[rows, self._last.to(hidden.device)].detach()
            if self.stop_after_last_site and len(self._captured) == len(self.sites):
                raise StopForward

        # Run eagerly under torch.compile: traced, the hook would specialise each compiled layer
        # on its site index (one recompile per layer, past dynamo's limit).
        return torch.compiler.disable(hook)

    def collect(self) -> torch.Tensor:
        """[B, K, D] float32 on the CPU, sites in order; errors if a site did not run."""
        missing = [self.sites[i].name for i in range(len(self.sites)) if i not in self._captured]
        if missing:
            raise RuntimeError(f"{len(missing)} site(s) never ran in the forward pass, e.g. {missing[:2]}")
        parts = [self._captured[i].reshape(-1, s.num_heads, s.head_dim) for i, s in enumerate(self.sites)]
        stacked = torch.cat(parts, dim=1).to("cpu", torch.float32)
        self._last, self._captured = None, {}
        return stacked


def extract(
    backbone: Backbone,
    items: Sequence[Item],
    prompt: str,
    batch_size: int = 8,
    store: Any = None,
    on_error: str = "raise",
    progress: bool = False,
    *,
    stop_after_last_site: bool = False,
    dtype: Any = np.float16,
    loader_threads: int = 4,
    order: str = "input",
) -> HeadFeatures:
    """Head features of ``items`` under ``prompt`` (one forward pass per batch).

    Args:
        backbone: from :func:`calm.load_backbone` (or :func:`calm.testing.tiny_backbone`).
        items: clips; ``item.audio`` (or, without it, ``item.video``'s audio track) is loaded at the
            backbone's rate; ``item.video`` frames go to backbones that take video.
        prompt: the user text (rendered with the backbone's chat template).
        batch_size: clips per forward pass.
        store: None, a directory, or an open :class:`calm.store.FeatureStore`: stored items are
            skipped and each finished batch is appended.
        on_error: ``"raise"`` lets a loading error (naming the file) propagate; ``"record"`` lists
            the item in ``failed`` (and in the store) and goes on. Failed items are never dropped
            silently.
        progress: show a progress bar (clips/s, ETA).
        stop_after_last_site: end each pass right after the last site (skips later layers).
        loader_threads: threads that decode clips in parallel while the model runs, the next
            batches' inputs built meanwhile (0: everything inline). Results and failures are the
            same for every value.
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
    if loader_threads < 0:
        raise ValueError(f"loader_threads must be at least 0, got {loader_threads}")
    duplicates = sorted(i for i, n in Counter(item.id for item in items).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate item ids: {duplicates[:5]}")
    fingerprint = feature_fingerprint(backbone, prompt)
    heads = backbone.head_index()
    with _opened(store, fingerprint, heads) as feature_store:
        run = _Run(backbone, prompt, feature_store, on_error, stop_after_last_site, np.dtype(dtype))
        run.hash_items(items)
        pending = [item for item in items if item.id in run.keys and run.keys[item.id] not in run.done]
        run.process(pending, batch_size, progress, loader_threads)
        finished = [item.id for item in items if item.id not in run.failed]
        if feature_store is not None:
            stored = feature_store.read(item_keys=[run.keys[i] for i in finished], in_store_order=order == "store")
            X, finished = stored.X, stored.ids
        elif finished:
            X = np.stack([run.rows[i] for i in finished])
        else:
            X = np.zeros((0, len(heads), backbone.sites[0].head_dim), dtype=dtype)
    return HeadFeatures(X, heads, finished, fingerprint, dict(run.failed))


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
        for item in items:
            if self.store is None:
                self.keys[item.id] = item.id
                continue
            try:
                video = content_hash(item.video) if self.uses_video(item) else None
                self.keys[item.id] = self.store.item_key(item.id, content_hash(audio_path(item)), video)
            except AudioLoadError as error:
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
                self._forward(loaded, capture)
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()

    def plan(self, items: Sequence[Item], batch_size: int) -> list[list[Item]]:
        """The batches of ``items``: sorted by duration, video and audio-only items apart. Items
        whose duration cannot be read are failed (see :meth:`fail`) and left out."""
        for item in items:
            try:
                self.seconds[item.id] = duration(audio_path(item))
            except ValueError as error:
                self.fail(item, error)
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
        With :meth:`run_batch`, what a worker of :mod:`calm.distributed` runs."""
        with closing(_loaded_batches([batch], self._decode, self._build, threads)) as loaded:
            return next(loaded)

    def run_batch(
        self, loaded: _LoadedBatch, capture: HeadCapture
    ) -> tuple[list[Item], np.ndarray | None, list[tuple[Item, ValueError]]]:
        """The forward pass of a loaded batch; records nothing: the items that ran with their
        [B, K, D] float32 rows (None if none ran), and the items that failed to load with their errors."""
        return loaded.items, self._pass(loaded, capture) if loaded.items else None, loaded.failures

    def _decode(self, item: Item) -> tuple[np.ndarray, Any] | ValueError:
        """The item's audio (and video frames, or None), or the loading error (thread-safe)."""
        try:
            audio = load_audio(audio_path(item), self.backbone.sample_rate)
            video = load_video(item.video, self.backbone.video_frames(self.seconds[item.id])) \
                if self.uses_video(item) else None
            return audio, video
        except ValueError as error:  # AudioLoadError, VideoLoadError
            return error

    def _build(self, batch: Sequence[Item], decoded: Sequence[tuple[np.ndarray, Any] | ValueError]) -> _LoadedBatch:
        """Model inputs of the items that decoded; the others with their errors (records nothing)."""
        loaded = [(item, clip) for item, clip in zip(batch, decoded) if not isinstance(clip, ValueError)]
        failures = [(item, error) for item, error in zip(batch, decoded) if isinstance(error, ValueError)]
        videos = [video for _, (_, video) in loaded if video is not None]
        inputs = self.backbone.build_inputs([audio for _, (audio, _) in loaded], self.prompt,
                                            videos=videos or None) if loaded else None
        return _LoadedBatch([item for item, _ in loaded], failures, inputs)

    def _forward(self, loaded: _LoadedBatch, capture: HeadCapture) -> None:
        """Record the batch's loading failures, then run its pass and keep (or store) its rows."""
        for item, error in loaded.failures:
            self.fail(item, error)
        if not loaded.items:
            return
        X = self._pass(loaded, capture)
        ids = [item.id for item in loaded.items]
        if self.store is not None:
            self.store.append([self.keys[i] for i in ids], ids, X)
        else:
            self.rows.update(zip(ids, X.astype(self.dtype)))

    def _pass(self, loaded: _LoadedBatch, capture: HeadCapture) -> np.ndarray:
        """The forward pass of a built batch: its [B, K, D] float32 rows."""
        with torch.inference_mode():
            capture.expect(self.backbone.token_mask(loaded.inputs))
            self.backbone.forward(loaded.inputs)
            return capture.collect().numpy()


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


def audio_path(item: Item) -> Any:
    """The file whose audio is used: ``item.audio``, else the video container's audio track."""
    path = item.audio if item.audio is not None else item.video
    if path is None:
        raise AudioLoadError(f"<item {item.id}>", "item has neither an audio nor a video file")
    return path


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="extract", smoothing=0.1)
