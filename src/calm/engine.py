"""The extraction engine that :func:`calm.extract` and :func:`calm.extract_ray` both drive: plan,
load, run, keep.

* **Plan** (:meth:`ExtractionEngine.plan`): hash each item's file (the store key), skip the items
  already stored, read the durations, and group the rest into batches of similar duration (video
  and audio-only items apart), so that a batch pads little. Unreadable items fail here.
* **Load** (:meth:`BatchRunner.batches`): decode, resample and pad each clip and compute its
  ``clip_features`` (Whisper's log-mel) in the worker processes of :mod:`calm.clips` (or inline),
  and build each batch's model inputs, in order.
* **Run** (:meth:`BatchRunner.run`): one forward pass per batch under ``torch.inference_mode``,
  the heads read by :class:`calm.capture.HeadCapture`.
* **Keep** (:meth:`ExtractionEngine.keep`): rows that are finite in float16 are kept (with a
  store: appended, durable per batch); the others fail. Failures are raised or recorded
  (:meth:`ExtractionEngine.fail`), never dropped.

The planning and keeping side (:class:`ExtractionEngine`) needs only a backbone's
:class:`BackboneTraits`, so the driver of a Ray run plans and writes the store without loading a
model; the loading and running side (:class:`BatchRunner`) needs the backbone, and a Ray actor
holds one. Every argument is checked once, by :class:`ExtractionConfig`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.capture import HeadCapture
from calm.choices import ON_ERROR, ORDERS
from calm.clips import ClipPool, default_loaders, loaded_batches, min_samples, read_clip
from calm.data.items import Item
from calm.data.loaders import media_item
from calm.features import HeadFeatures, HeadIndex
from calm.media import MediaLoadError, content_hash, duration, load_video
from calm.store import FeatureStore, StoreError


@dataclass(frozen=True)
class ExtractionConfig:
    """How an extraction runs (everything but the model, the items, the prompt and the store).

    Attributes:
        batch_size: clips per forward pass.
        on_error: ``"raise"`` lets a loading error (naming the file) propagate; ``"record"`` lists
            the item in ``failed`` (and in the store) and goes on.
        order: ``"input"``: rows in the order of the items; ``"store"`` (with a store): in the order
            they were stored (rows stay memory-mapped; match them to items by ``ids``).
        loaders: worker processes that decode and resample clips while the model runs (0: all
            inline; None: the backbone's option ``loaders``, else :func:`calm.clips.default_loaders`).
            Results and failures are the same for every value.
        stop_after_last_site: end each forward pass right after the last site.
        progress: show a progress bar (clips/s, ETA).
        dtype: dtype of the returned ``X`` without a store (with one, ``X`` is read back as float16).
    """

    batch_size: int = 8
    on_error: str = "raise"
    order: str = "input"
    loaders: int | None = None
    stop_after_last_site: bool = False
    progress: bool = False
    dtype: Any = np.float16

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.loaders is not None and self.loaders < 0:
            raise ValueError(f"loaders (formerly loader_threads) must be at least 0, got {self.loaders}")

    def replace(self, **changes: Any) -> "ExtractionConfig":
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    def loaders_for(self, options_loaders: int | None) -> int:
        """The loader processes to use: this config's, else the backbone option's, else the default."""
        for loaders in (self.loaders, options_loaders):
            if loaders is not None:
                return int(loaders)
        return default_loaders()


@dataclass(frozen=True)
class BackboneTraits:
    """What planning and keeping need of a backbone (the driver of a Ray run has no model)."""

    family: str
    supports_video: bool
    min_seconds: float
    window_seconds: float | None
    fingerprint: dict[str, Any] = field(hash=False)
    heads: HeadIndex = field(hash=False)
    head_dim: int = 0

    @classmethod
    def of(cls, backbone: Backbone, prompt: str) -> "BackboneTraits":
        """The traits of ``backbone``, its fingerprint under ``prompt``."""
        return cls(backbone.family, backbone.supports_video, backbone.min_seconds, backbone.window_seconds,
                   feature_fingerprint(backbone, prompt), backbone.head_index(), backbone.sites[0].head_dim)


@dataclass
class LoadedBatch:
    """A loaded batch: the items that loaded, those that failed (with the error), model inputs."""

    items: list[Item]
    failures: list[tuple[Item, ValueError]]
    inputs: Any


@dataclass
class ExtractionPlan:
    """The batches still to run (similar durations together) and each planned item's duration."""

    batches: list[list[Item]]
    seconds: dict[str, float]

    @property
    def clips(self) -> int:
        return sum(len(batch) for batch in self.batches)


def as_items(items: Sequence[Item | str | os.PathLike]) -> list[Item]:
    """Items as given; a path becomes an unlabelled item whose id is the path. Duplicate ids are refused."""
    items = [item if isinstance(item, Item) else media_item(str(item), Path(item), None) for item in items]
    duplicates = sorted(i for i, n in Counter(item.id for item in items).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate item ids: {duplicates[:5]}")
    return items


def media_path(item: Item) -> Any:
    """The file whose audio is used (:attr:`Item.media_path`), or a MediaLoadError naming the item."""
    if item.media_path is None:
        raise MediaLoadError(f"<item {item.id}>", "item has neither an audio nor a video file")
    return item.media_path


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


@contextmanager
def opened_store(store: Any, fingerprint: dict[str, Any], heads: HeadIndex) -> Iterator[FeatureStore | None]:
    """``store`` as an open :class:`FeatureStore` (a directory is opened, and closed after; an open
    store or None are passed through)."""
    if store is None or not isinstance(store, (str, os.PathLike)):
        yield store
        return
    opened = FeatureStore.open(store, key=fingerprint, heads=heads)
    try:
        yield opened
    finally:
        opened.close()


def _names(items: Sequence[Item]) -> str:
    """Up to three items' files, for a message."""
    names = ", ".join(str(item.media_path or item.id) for item in items[:3])
    return names + (", ..." if len(items) > 3 else "")


class ExtractionEngine:
    """Plans an extraction and keeps its results: store keys, failures, rows kept in memory.

    Args:
        traits: of the backbone (:meth:`BackboneTraits.of`).
        prompt: the user text.
        config: how the run goes (:class:`ExtractionConfig`).
        store: None or an open, locked :class:`FeatureStore` (this engine is its one writer).
    """

    def __init__(self, traits: BackboneTraits, prompt: str, config: ExtractionConfig, store: Any = None) -> None:
        self.traits = traits
        self.prompt = prompt
        self.config = config
        self.store = store
        self.done: set[str] = store.done_keys() if store is not None else set()
        self.keys: dict[str, str] = {}
        self.items: dict[str, Item] = {}
        self.content: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.rows: dict[str, np.ndarray] = {}
        self._video_warned = False

    def fail(self, item: Item, error: Exception) -> None:
        """Raise, or record the failure (here and in the store)."""
        if self.config.on_error == "raise":
            raise error
        reason = str(error)
        self.failed[item.id] = reason
        if self.store is not None:
            key = self.keys.get(item.id) or self.store.item_key(item.id, "unhashed")
            self.store.record_failure(key, item.id, reason)

    def uses_video(self, item: Item) -> bool:
        """Whether the item's video frames go to the model (warns once when the backbone takes none)."""
        if item.video is None:
            return False
        if self.traits.supports_video:
            return True
        if not self._video_warned:
            warnings.warn(f"{self.traits.family} backbones take no video; using only the audio of "
                          f"{item.video} and other video files", stacklevel=5)
            self._video_warned = True
        return False

    def plan(self, items: Sequence[Item], hashed: Mapping[str, str] | None = None) -> ExtractionPlan:
        """Hash the items (the store keys; ``hashed``: item id -> audio content hash already known),
        skip those stored, and batch the rest by duration. Items whose file cannot be read or holds
        no audio fail (see :meth:`fail`); clips shorter than the backbone's minimum (padded when
        loaded) and past the model's window (cut) are counted in one warning each, naming their files."""
        hashed = hashed or {}
        self.items.update((item.id, item) for item in items)
        for item in items:
            if self.store is None:
                self.keys[item.id] = item.id
                continue
            try:
                video = content_hash(item.video) if self.uses_video(item) else None
                self.content[item.id] = hashed.get(item.id) or content_hash(media_path(item))
                self.keys[item.id] = self.store.item_key(item.id, self.content[item.id], video)
            except MediaLoadError as error:
                self.fail(item, error)
        pending = [item for item in items if item.id in self.keys and self.keys[item.id] not in self.done]
        window, shortest = self.traits.window_seconds, self.traits.min_seconds
        seconds: dict[str, float] = {}
        too_long: list[Item] = []
        too_short: list[Item] = []
        for item in pending:
            try:
                seconds[item.id] = duration(media_path(item))
                if seconds[item.id] <= 0:
                    raise MediaLoadError(media_path(item), "holds no audio samples")
            except ValueError as error:
                seconds.pop(item.id, None)
                self.fail(item, error)
                continue
            if window is not None and seconds[item.id] > window + 1e-3:
                too_long.append(item)
            if seconds[item.id] < shortest:
                too_short.append(item)
        if too_long:
            warnings.warn(f"{len(too_long)} clip(s) are longer than the model's {window:g} s window and were cut to "
                          f"it (only their first {window:g} s count): {_names(too_long)}", stacklevel=4)
        if too_short:
            warnings.warn(f"{len(too_short)} clip(s) are shorter than {shortest:g} s, the least the "
                          f"{self.traits.family} audio encoder takes, and were padded with silence to it: "
                          f"{_names(too_short)}", stacklevel=4)
        todo = sorted((item for item in pending if item.id in seconds),
                      key=lambda item: (self.uses_video(item), seconds[item.id]))
        batches: list[list[Item]] = []
        start = 0
        while start < len(todo):
            group = self.uses_video(todo[start])
            batches.append([item for item in todo[start:start + self.config.batch_size]
                            if self.uses_video(item) == group])
            start += len(batches[-1])
        return ExtractionPlan(batches, seconds)

    def keep(self, ids: Sequence[str], X: np.ndarray) -> None:
        """Keep (or store) the rows of a batch's items; an item whose row is not finite in float16
        fails instead, and the rest of the batch is kept. Keys already stored are skipped."""
        fresh = [n for n, item_id in enumerate(ids) if self.keys[item_id] not in self.done]
        if not fresh:
            return
        ids, X = [ids[n] for n in fresh], np.asarray(X)[fresh]
        with np.errstate(over="ignore"):
            half = X.astype(np.float16)  # what the store keeps: cast once
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
            self.rows.update(zip(kept, X[finite].astype(self.config.dtype)))

    def features(self, items: Sequence[Item]) -> HeadFeatures:
        """The items that succeeded (in the config's ``order``; with a store, read back from it)
        and ``failed``: id -> reason."""
        traits = self.traits
        finished = [item.id for item in items if item.id not in self.failed]
        if self.store is not None:
            stored = self.store.read(item_keys=[self.keys[i] for i in finished],
                                     in_store_order=self.config.order == "store")
            X, finished = stored.X, stored.ids
            for item_id, reason in stored.failed.items():  # stored rows found damaged: fail, extract again next run
                self.fail(self.items[item_id], StoreError(reason))
        elif finished:
            X = np.stack([self.rows[i] for i in finished])
        else:
            X = np.zeros((0, len(traits.heads), traits.head_dim), dtype=self.config.dtype)
        content = {i: self.content[i] for i in finished if i in self.content}
        return HeadFeatures(X, traits.heads, finished, traits.fingerprint, dict(self.failed), content)


def forward_heads(backbone: Backbone, capture: HeadCapture, inputs: Any) -> np.ndarray:
    """One forward pass of inputs built by ``backbone.build_inputs``: the [B, K, D] float32 head
    rows read by ``capture`` (entered); what every extraction runs per batch."""
    with torch.inference_mode():
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        return capture.collect().numpy()


class BatchRunner:
    """Loads planned batches and runs the backbone on them (records nothing: results and loading
    errors go back to an :class:`ExtractionEngine`). Use as a context manager (hooks and loader
    processes are released on exit)."""

    def __init__(self, backbone: Backbone, prompt: str, config: ExtractionConfig, loaders: int = 0) -> None:
        self.backbone = backbone
        self.prompt = prompt
        self.config = config
        self.pool = ClipPool(loaders)
        self.capture = HeadCapture(backbone, config.stop_after_last_site)
        self.seconds: dict[str, float] = {}
        self._read = functools.partial(read_clip, sample_rate=backbone.sample_rate,
                                       shortest=min_samples(backbone.min_seconds, backbone.sample_rate),
                                       features=backbone.clip_features)

    def __enter__(self) -> "BatchRunner":
        self.capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture.__exit__(*exc)
        self.pool.close()

    def batches(self, plan: ExtractionPlan) -> Iterator[LoadedBatch]:
        """The plan's batches loaded, in order (clips read by the loader processes)."""
        self.seconds.update(plan.seconds)
        return loaded_batches(plan.batches, media_path, self._read, self._build, self.pool)

    def run(self, loaded: LoadedBatch) -> np.ndarray:
        """The forward pass of a loaded batch: its [B, K, D] float32 rows."""
        return forward_heads(self.backbone, self.capture, loaded.inputs)

    def _build(self, batch: Sequence[Item], clips: Sequence[Any]) -> LoadedBatch:
        """Model inputs of the items that loaded (each clip its audio or its ``clip_features``; video
        frames read here); the others with their errors."""
        loaded, failures, videos = [], [], []
        for item, clip in zip(batch, clips):
            try:
                if isinstance(clip, MediaLoadError):
                    raise clip
                if item.video is not None and self.backbone.supports_video:
                    videos.append(load_video(item.video, self.backbone.video_frames(self.seconds[item.id])))
                loaded.append((item, clip))
            except ValueError as error:  # MediaLoadError
                failures.append((item, error))
        inputs = self.backbone.build_inputs([clip for _, clip in loaded], self.prompt,
                                            videos=videos or None) if loaded else None
        return LoadedBatch([item for item, _ in loaded], failures, inputs)
