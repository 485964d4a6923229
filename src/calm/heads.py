"""Head features of many clips: :func:`extract`, the entry point of :mod:`calm.engine`.

For each batch, one forward pass runs under ``torch.inference_mode`` with a forward pre-hook on
every site's output projection. The hook reads the projection's input at each row's last real
token (found from the attention mask, so left and right padding both work) and keeps only that
[B, H*D] slice on the device; after the pass the slices of all sites are stacked to [B, K, D] and
copied to the CPU once. The LM head never runs (see :meth:`calm.backbones.Backbone.forward`), and
``stop_after_last_site=True`` ends the pass as soon as the last site has been read.

Items are grouped by duration so that a batch pads little; the result keeps the input order (or,
with ``order="store"``, the order of the store's rows). While the model runs a batch, worker
processes decode and resample the next clips and a thread builds their inputs
(:mod:`calm.clips`). With a store, items already in it are skipped and every finished batch is
appended (durable), so an interrupted run resumes where it stopped. How the work is split (plan,
load, run, keep) is :mod:`calm.engine`'s.
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any, Sequence

import numpy as np

from calm.backbones.base import Backbone
from calm.clips import MIN_CLIPS_FOR_LOADERS
from calm.config import configured
from calm.data.items import Item
from calm.engine import (ON_ERROR, ORDERS, BackboneTraits, BatchRunner, ExtractionConfig, ExtractionEngine, as_items,
                         feature_fingerprint, item_content, media_path, opened_store)
from calm.errors import InputError
from calm.features import HeadFeatures

__all__ = ["ON_ERROR", "ORDERS", "ExtractionConfig", "as_items", "extract", "extraction_config", "feature_fingerprint", "item_content",
           "media_path"]


def extract(backbone: Backbone, items: Sequence[Item | str | os.PathLike], prompt: str, batch_size: int = 8,
            store: Any = None, on_error: str = "raise", progress: bool = False, *,
            config: ExtractionConfig | None = None, **options: Any) -> HeadFeatures:
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
        options: the other fields of :class:`calm.engine.ExtractionConfig` (by keyword):
            stop_after_last_site: end each pass right after the last site (skips later layers).
            loaders: worker processes that decode and resample clips while the model runs, the next
                batches' inputs built meanwhile (0: everything inline; None: the backbone's option
                ``loaders``, else :func:`calm.clips.default_loaders`, from the core count). Jobs of
                fewer than 16 clips load inline. Results and failures are the same for every value.
            order: ``"input"``: rows in the order of ``items``; ``"store"`` (with a store): in the
                order they were stored, so that rows stored together stay memory-mapped instead of
                being gathered into memory (for large datasets; match rows to items by ``ids``).
            dtype: dtype of the returned ``X`` without a store (float16 by default; float32 for exact
                comparisons). With a store, ``X`` is read back from it (float16, memory-mapped).
            loader_threads: the former name of ``loaders``.
        config: all of the above in one :class:`calm.engine.ExtractionConfig` (then leave them
            at their defaults).

    With the backbone option ``compile=None`` (the default), a job large enough to repay it on a
    GPU compiles the layers first (:meth:`calm.backbones.Backbone.compile_for`).

    Returns:
        HeadFeatures with the items that succeeded (in the ``order`` asked) and ``failed``: id -> reason.
    """
    config = extraction_config(config, dict(batch_size=batch_size, on_error=on_error, progress=progress, **options),
                               "extract")
    return _extract(backbone, as_items(items), prompt, config, store)


def extraction_config(config: ExtractionConfig | None, options: dict[str, Any], caller: str) -> ExtractionConfig:
    """``config``, or the :class:`~calm.engine.ExtractionConfig` that keyword ``options`` build
    (``loader_threads``: the former name of ``loaders``); both, with an option off its default, are refused."""
    if "loader_threads" in options:
        threads = options.pop("loader_threads")
        options["loaders"] = options.get("loaders") if threads is None else threads
    given = configured(ExtractionConfig, None, options, caller)
    if config is not None and given != ExtractionConfig():
        raise InputError(f"{caller}(): give the run's settings either as arguments or as config=, not both")
    return config or given


def _extract(backbone: Backbone, items: Sequence[Item], prompt: str, config: ExtractionConfig,
             store: Any = None) -> HeadFeatures:
    """Plan, then load, run and keep batch after batch (with a store: stored items skipped, each
    finished batch appended)."""
    hashed: dict[str, str] = {}
    if not getattr(backbone, "loaded", True):  # deferred (calm.backbones.loading): weights only if there is work
        stored, hashed = _all_stored(backbone, items, prompt, config, store)
        if stored is not None:
            return stored
        backbone = backbone.load()
    backbone.compile_for(len(items))  # before the fingerprint: compiled features are keyed apart
    traits = BackboneTraits.of(backbone, prompt)
    with opened_store(store, traits.fingerprint, traits.heads) as feature_store:
        if feature_store is not None:
            feature_store.lock()  # one writer; what is stored is read after taking the lock
        engine = ExtractionEngine(traits, prompt, config, feature_store)
        plan = engine.plan(items, hashed)  # files hashed above are not read again
        loaders = config.loaders_for(backbone.options.loaders) if plan.clips >= MIN_CLIPS_FOR_LOADERS else 0
        bar = _progress_bar(plan.clips) if config.progress else None
        with BatchRunner(backbone, prompt, config, loaders) as runner, closing(runner.batches(plan)) as loaded:
            for batch, ready in zip(plan.batches, loaded):
                for item, error in ready.failures:
                    engine.fail(item, error)
                if ready.items:
                    engine.keep([item.id for item in ready.items], runner.run(ready))
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
        return engine.features(items)


def _all_stored(backbone: Any, items: Sequence[Item], prompt: str, config: ExtractionConfig,
                store: Any) -> tuple[HeadFeatures | None, dict[str, str]]:
    """The features of ``items`` read from ``store`` when it holds every one intact (no model
    needed: the fingerprint and heads are the store's own), else None; and the audio content
    hashes computed on the way (item id -> SHA-256), for the plan to reuse."""
    if store is None or any(item.video for item in items):
        return None, {}
    fingerprint, heads = feature_fingerprint(backbone, prompt), backbone.head_index()
    with opened_store(store, fingerprint, heads) as feature_store:
        content = item_content(items)
        if len(content) < len(items):
            return None, content
        keys = [feature_store.item_key(item.id, content[item.id]) for item in items]
        if not set(keys) <= feature_store.done_keys():
            return None, content
        stored = feature_store.read(item_keys=keys, in_store_order=config.order == "store")
        if stored.failed:
            return None, content
        return HeadFeatures(stored.X, heads, stored.ids, fingerprint, {}, {i: content[i] for i in stored.ids}), content


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="extract", smoothing=0.1)
