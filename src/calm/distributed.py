"""Extraction across GPUs and machines on Ray Data, into one feature store.

:func:`extract_ray` runs the same extraction as :func:`calm.heads.extract`, spread over a pool of
Ray actors (one per GPU with ``num_gpus_per_actor=1``, or CPU actors):

* The driver (the calling process) hashes the items, skips those already in the store, reads
  their durations and groups them into the same batches as the single-process path
  (:meth:`calm.heads._Run.plan`). Each batch becomes one row of a Ray dataset.
* Each actor loads the backbone once, from a :class:`BackboneSpec` (a model name and options:
  backbones themselves are not picklable), and runs each batch it is given with the same code as
  the single-process path (:meth:`calm.heads._Run.load_batch` and ``run_pass``: decoding, input building,
  :class:`calm.heads.HeadCapture`), returning the rows (cast to float16 as the store would: half
  the bytes to send, and the cast off the driver) and the items that failed to load. Two batches
  are in an actor at once: one decoded (in ``loader_threads`` threads) and built while the model
  runs the other, the overlap that :func:`calm.heads.extract` gets from its background threads.
* Results stream back to the driver, which alone writes the :class:`calm.store.FeatureStore`
  (append and failure records, durable per batch). One writer cannot corrupt the store; a key
  already stored is never appended again; a rerun skips stored items before dispatching anything.
* An actor that dies (kill -9, a lost node) is restarted by Ray and its batch retried (Ray Data's
  actor pools run with ``max_restarts=-1`` and ``max_task_retries=-1``): nothing is lost, and
  since the store only sees finished batches, nothing is stored twice.

Cost beyond the single-process path: Ray's start-up (seconds, see docs/benchmarks.md), one extra
model load on the cluster before the actors start (to learn the store key: model fingerprint,
dtype, head index), and each actor's model load. Needs the ``ray`` extra: ``pip install 'calm-audio[ray]'``.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from calm.backbones.options import BackboneOptions
from calm.data.items import Item
from calm.features import HeadFeatures, HeadIndex
from calm.capture import HeadCapture
from calm.heads import ON_ERROR, ORDERS, _opened, _Run, feature_fingerprint
from calm.store import StoreError


@dataclass(frozen=True)
class BackboneSpec:
    """How a worker loads a backbone: :func:`calm.load_backbone`'s arguments. Options with
    ``device=None`` pick ``cuda`` where the worker sees a GPU, else ``cpu``."""

    name: str
    options: BackboneOptions = field(default_factory=BackboneOptions)
    family: str | None = None

    def load(self) -> Any:
        from calm.backbones import load_backbone

        return load_backbone(self.name, self.options, family=self.family)


@dataclass(frozen=True)
class _Description:
    """What the driver needs of a backbone it does not load: the store key and how to batch."""

    family: str
    supports_video: bool
    min_seconds: float
    window_seconds: float | None
    fingerprint: dict[str, Any]
    heads: HeadIndex
    head_dim: int


def _describe(spec: BackboneSpec, prompt: str) -> _Description:
    backbone = spec.load()
    return _Description(backbone.family, backbone.supports_video, backbone.min_seconds, backbone.window_seconds,
                        feature_fingerprint(backbone, prompt), backbone.head_index(), backbone.sites[0].head_dim)


class _Worker:
    """A Ray Data actor: loads the backbone once, then runs one planned batch per call. Two calls
    run at once: one decodes and builds its batch while the other runs the model (one lock each,
    so each step runs one batch at a time, as in the single-process path)."""

    def __init__(self, spec: BackboneSpec, prompt: str, stop_after_last_site: bool, loader_threads: int) -> None:
        self.run = _Run(spec.load(), prompt, None, "record", stop_after_last_site, np.dtype(np.float32))
        self.capture = HeadCapture(self.run.backbone, stop_after_last_site).__enter__()
        self.loader_threads = loader_threads
        self.loading, self.running = threading.Lock(), threading.Lock()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for task in rows["task"]:
            batch, seconds = pickle.loads(task)
            with self.loading:
                self.run.seconds.update(seconds)
                loaded = self.run.load_batch(batch, self.loader_threads)
            X = None
            if loaded.items:
                with self.running:
                    X = self.run.run_pass(loaded, self.capture)
                with np.errstate(over="ignore"):  # the store's own cast, done here: half the bytes to send
                    X = X.astype(np.float16)  # (an overflow shows as inf: that item fails on the driver)
            failures = [(item.id, error) for item, error in loaded.failures]
            results.append(pickle.dumps(([item.id for item in loaded.items], X, failures)))
        return {"batch": rows["batch"], "result": np.array(results, dtype=object)}


def extract_ray(
    model: str | BackboneSpec,
    items: Sequence[Item],
    prompt: str,
    store: Any,
    *,
    address: str | None = None,
    num_actors: int | None = None,
    num_gpus_per_actor: float | None = None,
    num_cpus_per_actor: float = 1,
    batch_size: int = 8,
    loader_threads: int = 4,
    on_error: str = "raise",
    stop_after_last_site: bool = False,
    order: str = "input",
    progress: bool = False,
) -> HeadFeatures:
    """Head features of ``items`` under ``prompt``, extracted by Ray actors into ``store``.

    Args:
        model: a name for :func:`calm.load_backbone` or a :class:`BackboneSpec` (device, dtype).
        items, prompt, batch_size, on_error, stop_after_last_site, order: as in
            :func:`calm.heads.extract` (same batches, same features, same failure records).
        store: a directory or an open :class:`calm.store.FeatureStore` (required: results are
            written as they arrive, and a rerun resumes).
        address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"`` ...); None starts a
            local one (all GPUs of this machine) unless Ray is already initialised in this process.
        num_actors: actors in the pool (default: one per GPU of the cluster, else 1).
        num_gpus_per_actor: GPUs each actor reserves (default: 1 on a cluster with GPUs, else 0).
        num_cpus_per_actor: CPUs each actor reserves (also its torch threads).
        loader_threads: threads in each actor that decode a batch's clips while the model runs
            the previous batch (0: decode inline), as in :func:`calm.heads.extract`.
        progress: print what is stored already and what is to do, and Ray Data's progress bars
            and logs (without it, the ``ray.data`` logger is set to warnings only).

    Returns:
        HeadFeatures read back from the store (float16, memory-mapped), ``failed`` as recorded.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if loader_threads < 0:
        raise ValueError(f"loader_threads must be at least 0, got {loader_threads}")
    if store is None:
        raise ValueError("extract_ray needs a store (a directory or an open FeatureStore)")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate item ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    spec = model if isinstance(model, BackboneSpec) else BackboneSpec(str(model))
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        gpus_each = float(num_gpus_per_actor if num_gpus_per_actor is not None else (1 if gpus else 0))
        if gpus_each > gpus:
            raise ValueError(f"each actor asks for {gpus_each:g} GPU(s); the Ray cluster has {gpus}")
        actors = int(num_actors or max(1, int(gpus // gpus_each) if gpus_each else 1))
        resources = {"num_cpus": num_cpus_per_actor, "num_gpus": gpus_each}
        info = ray.get(ray.remote(**resources)(_describe).remote(spec, prompt))
        with _opened(store, info.fingerprint, info.heads) as feature_store:
            if feature_store.key != json.loads(json.dumps(info.fingerprint)):
                raise ValueError(f"{feature_store.path}: the store's key is not {spec.name}'s under this prompt")
            feature_store.lock()  # the one writer; what is stored is read after taking the lock
            run = _Run(info, prompt, feature_store, on_error, stop_after_last_site, np.dtype(np.float16))
            run.hash_items(items)
            pending = [item for item in items if item.id in run.keys and run.keys[item.id] not in run.done]
            batches = run.plan(pending, batch_size)
            if progress:
                print(f"extract_ray: {len(items) - len(pending)} stored already, {len(pending)} to extract in "
                      f"{len(batches)} batches on {actors} actor(s)", file=sys.stderr)
            if batches:
                workers = {"spec": spec, "prompt": prompt, "stop_after_last_site": stop_after_last_site,
                           "loader_threads": loader_threads}
                _write_results(_results(ray, batches, run.seconds, workers, actors, resources, progress), run)
            finished = [i for i in ids if i not in run.failed]
            stored = feature_store.read(item_keys=[run.keys[i] for i in finished], in_store_order=order == "store")
            for item_id, reason in stored.failed.items():  # stored rows found damaged: fail, extract again next run
                run.fail(run.items[item_id], StoreError(reason))
    finally:
        if started:
            ray.shutdown()
    return HeadFeatures(stored.X, info.heads, stored.ids, info.fingerprint, dict(run.failed))


def _results(ray: Any, batches: list[list[Item]], seconds: dict[str, float], workers: dict[str, Any],
             actors: int, resources: dict[str, float], progress: bool) -> Iterator[bytes]:
    """Each batch's pickled result, as the actors (:class:`_Worker` made with ``workers``) finish
    them, in no set order."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    tasks = [{"batch": n, "task": pickle.dumps(([replace(item, meta={}) for item in batch],
                                                {item.id: seconds[item.id] for item in batch}))}
             for n, batch in enumerate(batches)]
    pool = ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)
    dataset = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
        _Worker, fn_constructor_kwargs=workers, batch_size=1, batch_format="numpy", compute=pool, **resources)
    for row in dataset.iter_rows():
        yield row["result"]


def _write_results(results: Iterator[bytes], run: _Run) -> None:
    """The single writer: keep each batch's rows once (:meth:`calm.heads._Run.keep`: keys already
    stored are skipped, non-finite rows fail), and record (or raise) its failures as the
    single-process path does."""
    try:
        for result in results:
            ids, X, failures = pickle.loads(result)
            for item_id, error in failures:
                run.fail(run.items[item_id], error)
            fresh = [n for n, item_id in enumerate(ids) if run.keys[item_id] not in run.done]
            if fresh:
                run.keep([ids[n] for n in fresh], X[fresh])
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # needs pyarrow, part of the extra
    except ImportError as error:
        raise ImportError(f"extraction on Ray needs the ray extra: pip install 'calm-audio[ray]' ({error})") from None
    return ray
