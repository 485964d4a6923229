"""Loading clips for an extraction: decode, resample and pad each clip, inline or in worker
processes, and build each batch's inputs in order.

Decoding a 44.1 kHz stereo FLAC file, mixing it to mono and resampling it with soxr is most of
what loading costs, and much of it holds the interpreter lock, so threads stop scaling (see
``docs/benchmarks.md``). Here ``loaders`` worker processes do that work, and the per-clip part of
the model's inputs that needs no torch (a backbone's ``clip_features``: Whisper's log-mel), and
send back float32 arrays; they are spawned, so they import this module and what that function
needs (numpy, soundfile, soxr, threadpoolctl: neither torch nor transformers) and, as every
spawned Python process does, the calling script's module (the ``calm`` command's is light; a
script that imports torch at its top makes each start slower). One thread of the calling process
builds each batch's model inputs from them (the tokenizer is not safe to call concurrently), up to
:data:`BATCHES_AHEAD` batches ahead of the model, and batches come out in the order planned, so
results do not depend on ``loaders`` (inline, the same functions run in the calling process).

A worker that dies (killed, out of memory) breaks the pool: :func:`loaded_batches` raises
:class:`LoaderDied` naming the clips it was loading; what was finished before stays finished (in a
feature store, stored), and a rerun resumes.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from calm.errors import CalmError
from calm.media import MediaLoadError, load_audio

B = TypeVar("B")
R = TypeVar("R")

MAX_LOADERS = 32
"""The most loader processes chosen by default (more cores than this go to the model)."""

BATCHES_AHEAD = 2
"""Batches loaded and built ahead of the one the model runs (with loader processes)."""

MIN_CLIPS_FOR_LOADERS = 16
"""Jobs with fewer clips load inline: starting the worker processes takes longer than they save
(about a second)."""


class LoaderDied(CalmError, RuntimeError):
    """A loader process died (killed, out of memory) while loading the clips it names."""


def default_loaders() -> int:
    """Loader processes for this machine: one per core this process may use but one (left to the
    model and the input building), at most :data:`MAX_LOADERS`; 0 on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_LOADERS, cores - 1))


def pad_to_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` with trailing silence up to ``samples`` (unchanged if already as long)."""
    missing = samples - len(audio)
    return np.pad(audio, (0, missing)) if missing > 0 else audio


def min_samples(seconds: float, sample_rate: int) -> int:
    """Samples of the shortest clip an encoder is given (``seconds`` at ``sample_rate``)."""
    return math.ceil(seconds * sample_rate)


def read_clip(path: os.PathLike | str, sample_rate: int, shortest: int,
              features: Callable[[np.ndarray], Any] | None = None) -> Any:
    """The file's audio (mono float32 at ``sample_rate``, padded to ``shortest`` samples), or what
    ``features`` makes of it (a backbone's :attr:`~calm.backbones.base.Backbone.clip_features`), or
    the error that names the file and says why it cannot be used (returned, so a worker sends it back)."""
    try:
        audio = pad_to_length(load_audio(path, sample_rate), shortest)
    except MediaLoadError as error:
        return error
    return audio if features is None else features(audio)


PARENT_CHECK_SECONDS = 0.5
"""How often a loader process checks that the process it loads for is still alive."""


MALLOC_KEEP_BYTES = 32 << 20
"""Freed blocks up to this size stay with a loader process's heap (glibc's largest mmap threshold)."""


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to :data:`MALLOC_KEEP_BYTES` for reuse instead of
    unmapping each (its threshold starts at 128 KB): otherwise a fresh loader process faults every
    clip's arrays in anew, about 2,000 page faults and 4 ms of system time per 5 s clip with its
    log-mel. Returns False where the C library is not glibc (nothing changes)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD in malloc.h
    return bool(mallopt(mmap_threshold, MALLOC_KEEP_BYTES)) and bool(mallopt(trim_threshold, 4 * MALLOC_KEEP_BYTES))


def _start_loader(parent: int) -> None:
    """In a new loader process: keep freed memory (:func:`keep_freed_memory`), and exit when
    ``parent`` is gone (killed with SIGKILL, it cannot stop its workers, which would otherwise wait
    for work forever)."""
    keep_freed_memory()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="calm-follow-parent", daemon=True).start()


class ClipPool:
    """``loaders`` worker processes that read clips, started on first use and kept until
    :meth:`close` (so a Ray actor reuses them batch after batch); with 0, clips are read inline."""

    def __init__(self, loaders: int) -> None:
        if loaders < 0:
            raise ValueError(f"loaders must be at least 0, got {loaders}")
        self.loaders = loaders
        self._workers: ProcessPoolExecutor | None = None

    def submit(self, read: Callable[..., R], *args: object) -> Future[R]:
        """``read(*args)`` in a worker process (``read`` must be picklable: a module-level function)."""
        if self._workers is None:
            # spawn: a fresh interpreter that imports only what ``read`` needs (fork would copy the
            # model's process, its threads and all)
            self._workers = ProcessPoolExecutor(self.loaders, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_start_loader, initargs=(os.getpid(),))
        return self._workers.submit(read, *args)

    def close(self) -> None:
        """Stop the workers (what has not started is cancelled)."""
        if self._workers is not None:
            self._workers.shutdown(wait=True, cancel_futures=True)
            self._workers = None

    def __enter__(self) -> "ClipPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def loaded_batches(
    batches: Sequence[Sequence[B]],
    path: Callable[[B], os.PathLike | str],
    read: Callable[[os.PathLike | str], Any],
    build: Callable[[Sequence[B], list[Any]], R],
    pool: ClipPool,
) -> Iterator[R]:
    """``build(batch, [read(path(item)) ...])`` for each batch, in order. With a pool of workers,
    ``read`` runs in them and ``build`` in one thread, up to :data:`BATCHES_AHEAD` batches ahead of
    the consumer; with none, everything runs inline. Closing the generator cancels what has not
    started. A worker that dies raises :class:`LoaderDied`."""
    if pool.loaders == 0:
        for batch in batches:
            yield build(batch, [read(path(item)) for item in batch])
        return
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calm-inputs")
    pending: deque[tuple[Sequence[B], Future[R]]] = deque()

    def collect(batch: Sequence[B], clips: list[Future[Any]]) -> R:
        return build(batch, [clip.result() for clip in clips])

    loading: Sequence[B] = ()
    try:
        for batch in batches:
            loading = batch
            clips = [pool.submit(read, path(item)) for item in batch]
            pending.append((batch, builder.submit(collect, batch, clips)))
            if len(pending) > BATCHES_AHEAD:
                loading, future = pending.popleft()
                yield future.result()
        while pending:
            loading, future = pending.popleft()
            yield future.result()
    except BrokenProcessPool:
        pool.close()
        names = ", ".join(str(path(item)) for item in loading[:3])
        raise LoaderDied(f"a loader process died (killed, or out of memory?) while loading {len(loading)} clip(s) "
                         f"({names}{', ...' if len(loading) > 3 else ''}); what finished before is kept (in a store: "
                         "stored, and a rerun resumes); --loaders 0 loads in this process") from None
    finally:
        builder.shutdown(wait=True, cancel_futures=True)
