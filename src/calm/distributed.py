"""Extraction across GPUs and machines on Ray Data, into one feature store.

:func:`extract_ray` runs the same extraction as :func:`calm.heads.extract`, spread over a pool of
Ray actors (one per GPU with ``num_gpus_per_actor=1``, or CPU actors):

* The driver (the calling process) hashes the items, skips those already in the store, reads
  their durations and groups them into the same batches as the single-process path
  (:meth:`calm.engine.ExtractionEngine.plan`). Each batch becomes one row of a Ray dataset.
* Each actor loads the backbone once, from a :class:`BackboneSpec` (a model name and options:
  backbones themselves are not picklable), and runs each batch it is given with the same code as
  the single-process path (:class:`calm.engine.BatchRunner`: decoding, input building,
  :class:`calm.capture.HeadCapture`), returning the rows (cast to float16 as the store would: half
  the bytes to send, and the cast off the driver) and the items that failed to load. Two batches
  are in an actor at once: one decoded (by ``loaders`` worker processes, kept for the actor's
  life) and built while the model runs the other, the overlap :func:`calm.heads.extract` gets.
* Results stream back to the driver, whose :class:`calm.engine.ExtractionEngine` alone writes
  the :class:`calm.store.FeatureStore` (append and failure records, durable per batch). One writer cannot corrupt the store; a key
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
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from calm.backbones import load_backbone
from calm.backbones.options import BackboneOptions
from calm.data.items import Item
from calm.engine import (BackboneTraits, BatchRunner, ExtractionConfig, ExtractionEngine, ExtractionPlan,
                         as_items, opened_store)
from calm.config import configured, split_options
from calm.errors import InputError, MissingDependencyError
from calm.features import HeadFeatures
from calm.heads import extraction_config


CONNECT_TIMEOUT = 30.0
"""Seconds :func:`extract_ray` waits for a Ray cluster at a given address before giving up."""


@dataclass(frozen=True)
class BackboneSpec:
    """How a worker loads a backbone: :func:`calm.load_backbone`'s arguments. Options with
    ``device=None`` pick ``cuda`` where the worker sees a GPU, else ``cpu``."""

    name: str
    options: BackboneOptions = field(default_factory=BackboneOptions)
    family: str | None = None

    def load(self) -> Any:
        return load_backbone(self.name, self.options, family=self.family)


def _describe(spec: BackboneSpec, prompt: str, clips: int) -> tuple[BackboneTraits, bool]:
    """The traits of the backbone the actors will load (the store key) for a job of ``clips``
    clips, and whether its layers compile (the option, or the choice for the job's size)."""
    backbone = spec.load()
    compiled = backbone.compile_for(clips)
    return BackboneTraits.of(backbone, prompt), compiled


class _Worker:
    """A Ray Data actor: loads the backbone once, then runs one planned batch per call. Two calls
    run at once: one loads and builds its batch while the other runs the model (one lock each, so
    each step runs one batch at a time, as in the single-process path)."""

    def __init__(self, spec: BackboneSpec, prompt: str, config: ExtractionConfig) -> None:
        backbone = spec.load()
        self.runner = BatchRunner(backbone, prompt, config, config.loaders_for(backbone.options.loaders)).__enter__()
        self.loading, self.running = threading.Lock(), threading.Lock()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for task in rows["task"]:
            batch, seconds = pickle.loads(task)
            with self.loading:
                loaded = next(iter(self.runner.batches(ExtractionPlan([batch], seconds))))
            X = None
            if loaded.items:
                with self.running:
                    X = self.runner.run(loaded)
                with np.errstate(over="ignore"):  # the store's own cast, done here: half the bytes to send
                    X = X.astype(np.float16)  # (an overflow shows as inf: that item fails on the driver)
            failures = [(item.id, error) for item, error in loaded.failures]
            results.append(pickle.dumps(([item.id for item in loaded.items], X, failures)))
        return {"batch": rows["batch"], "result": np.array(results, dtype=object)}


@dataclass(frozen=True)
class RayCluster:
    """Where and on how many actors :func:`extract_ray` runs.

    Attributes:
        address: a Ray cluster to join (``"auto"``, ``"host:6379"``, ``"ray://host:10001"`` ...);
            None starts a local one (all GPUs of this machine, listening on 127.0.0.1 only) unless
            Ray is already initialised in this process.
        num_actors: actors in the pool (default: one per GPU of the cluster, else 1).
        num_gpus_per_actor: GPUs each actor reserves (default: 1 on a cluster with GPUs, else 0).
        num_cpus_per_actor: CPUs each actor reserves (also its torch threads).
        connect_timeout: seconds to wait for the cluster at ``address`` before giving up with an
            error naming it.
    """

    address: str | None = None
    num_actors: int | None = None
    num_gpus_per_actor: float | None = None
    num_cpus_per_actor: float = 1
    connect_timeout: float = CONNECT_TIMEOUT


def extract_ray(model: str | BackboneSpec, items: Sequence[Item], prompt: str, store: Any, *,
                config: ExtractionConfig | None = None, cluster: RayCluster | None = None,
                **options: Any) -> HeadFeatures:
    """Head features of ``items`` under ``prompt``, extracted by Ray actors into ``store``.

    Args:
        model: a name for :func:`calm.load_backbone` or a :class:`BackboneSpec` (device, dtype).
        items, prompt, config: as in :func:`calm.heads.extract` (same batches, same features, same
            failure records).
        store: a directory or an open :class:`calm.store.FeatureStore` (required: results are
            written as they arrive, and a rerun resumes).
        cluster: where it runs (:class:`RayCluster`).
        options: fields of :class:`calm.engine.ExtractionConfig` (``batch_size``, ``on_error``,
            ``order``, ``loaders``: worker processes in each actor that decode clips while the
            model runs the previous batch ...; ``loader_threads``: its former name) and of
            :class:`RayCluster` (``address``, ``num_actors`` ...), by keyword, instead of the two
            objects. ``progress`` prints what is stored already and what is to do, and Ray
            Data's progress bars and logs (without it, Ray logs errors only).

    Returns:
        HeadFeatures read back from the store (float16, memory-mapped), ``failed`` as recorded.
    """
    on_ray, extraction = split_options(options, RayCluster)
    cluster = configured(RayCluster, cluster, on_ray, "extract_ray")
    config = extraction_config(config, extraction, "extract_ray")
    if store is None:
        raise InputError("extract_ray needs a store (a directory or an open FeatureStore)")
    items = as_items(items)
    spec = model if isinstance(model, BackboneSpec) else BackboneSpec(str(model))
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _start(ray, cluster.address, cluster.connect_timeout, config.progress)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        gpus_each = float(cluster.num_gpus_per_actor if cluster.num_gpus_per_actor is not None else (1 if gpus else 0))
        if gpus_each > gpus:
            raise InputError(f"each actor asks for {gpus_each:g} GPU(s); the Ray cluster has {gpus}")
        actors = int(cluster.num_actors or max(1, int(gpus // gpus_each) if gpus_each else 1))
        resources = {"num_cpus": cluster.num_cpus_per_actor, "num_gpus": gpus_each}
        traits, compiled = ray.get(ray.remote(**resources)(_describe).remote(spec, prompt, len(items)))
        spec = replace(spec, options=spec.options.replace(compile=compiled))  # every actor decides alike
        with opened_store(store, traits.fingerprint, traits.heads) as feature_store:
            if feature_store.key != json.loads(json.dumps(traits.fingerprint)):
                raise InputError(f"{feature_store.path}: the store's key is not {spec.name}'s under this prompt")
            feature_store.lock()  # the one writer; what is stored is read after taking the lock
            engine = ExtractionEngine(traits, prompt, config, feature_store)
            plan = engine.plan(items)
            if config.progress:
                print(f"extract_ray: {len(items) - plan.clips - len(engine.failed)} stored already, {plan.clips} to "
                      f"extract in {len(plan.batches)} batches on {actors} actor(s)", file=sys.stderr)
            if plan.batches:
                workers = {"spec": spec, "prompt": prompt, "config": config}
                _write_results(_results(ray, plan, workers, actors, resources, config.progress), engine)
            return engine.features(items)
    finally:
        if started:
            ray.shutdown()


def _results(ray: Any, plan: ExtractionPlan, workers: dict[str, Any], actors: int, resources: dict[str, float],
             progress: bool) -> Iterator[bytes]:
    """Each batch's pickled result, as the actors (:class:`_Worker` made with ``workers``) finish
    them, in no set order."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # before its "progress bars disabled" warning
    tasks = [{"batch": n, "task": pickle.dumps(([replace(item, meta={}) for item in batch],
                                                {item.id: plan.seconds[item.id] for item in batch}))}
             for n, batch in enumerate(plan.batches)]
    pool = ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)
    dataset = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
        _Worker, fn_constructor_kwargs=workers, batch_size=1, batch_format="numpy", compute=pool, **resources)
    for row in dataset.iter_rows():
        yield row["result"]


def _write_results(results: Iterator[bytes], engine: ExtractionEngine) -> None:
    """The single writer: keep each batch's rows once (:meth:`calm.engine.ExtractionEngine.keep`:
    keys already stored are skipped, non-finite rows fail), and record (or raise) its failures as
    the single-process path does."""
    try:
        for result in results:
            ids, X, failures = pickle.loads(result)
            for item_id, error in failures:
                engine.fail(engine.items[item_id], error)
            if ids:
                engine.keep(ids, X)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _start(ray: Any, address: str | None, timeout: float, progress: bool) -> None:
    """Join the cluster at ``address`` (refused with a one-line error when nothing answers there
    within ``timeout`` seconds), or start a local one that advertises 127.0.0.1. Without
    ``progress``, Ray logs errors only (its C++ core included) and workers' output stays in their
    logs."""
    if not progress:
        logging.getLogger("ray").setLevel(logging.ERROR)
    level = logging.WARNING if progress else logging.ERROR
    if address is None:
        ray.init(include_dashboard=False, logging_level=level, log_to_driver=progress, _node_ip_address="127.0.0.1")
        return
    if address != "auto":
        _check_reachable(address, timeout)
    ray.init(address=address, logging_level=level, log_to_driver=progress)


def _check_reachable(address: str, timeout: float) -> None:
    """A ConnectionError naming ``address`` unless a server answers at its host and port."""
    client = address.startswith("ray://")
    if client:
        try:
            import ray.util.client  # noqa: F401  (ray[client]: grpcio)
            import grpc  # noqa: F401
        except ImportError:
            raise MissingDependencyError(f"{address}: ray:// addresses need Ray's client: pip install 'calm-audio[ray]' "
                              "(it includes ray[client])") from None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"{address}: not a Ray address (host:port, ray://host:port or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise ConnectionError(f"{address}: no Ray cluster answers there ({reason}, waited up to {timeout:g} s); "
                              "start one with 'ray start --head' or use --ray without an address") from None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # needs pyarrow, part of the extra
    except ImportError as error:
        raise MissingDependencyError(f"extraction on Ray needs the ray extra: pip install 'calm-audio[ray]' ({error})") from None
    return ray
