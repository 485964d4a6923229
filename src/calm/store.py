"""An on-disk, append-only, crash-safe store of head features, read back memory-mapped.

Layout of one store, ``root/<first 16 hex of sha256(canonical JSON key)>/``:

* ``key.json``: the key (model id, revision, dtype, prompt, sites ...) and the head index. A
  directory whose ``key.json`` differs from the key asked for is refused, never reused.
* ``data.f16``: raw float16 rows of K*D values, appended batch by batch.
* ``journal.jsonl``: one JSON line per event, appended only after the data it describes is
  flushed and fsynced: ``{"start", "n", "d", "keys", "ids", "sha256"}`` for a batch of rows (the
  checksum of its bytes in ``data.f16``), and ``{"failed", "id", "reason"}`` for an item that
  could not be processed. The journal is ASCII JSON: a file name that is not UTF-8 is kept as
  ``\\udcXX`` escapes, which ``os.fsencode`` turns back into its bytes.
* ``lock``: held (flock) by the one process writing, from its first write until ``close``.

Reading needs no write access (a read-only store is read as it is; only writing raises). Each
batch a read touches is checked once per open store (its checksum; older stores: finite values);
the items of a damaged batch are left out of ``X`` and listed in ``failed``, so that extraction
records them as failed and extracts them again on its next run.

A journal line ends with a newline and is fsynced before ``append`` returns, so a kill -9 (or a
power cut) at any moment loses at most the batch being written: on the next write the torn
journal tail and any data beyond the last journalled row are cut off.

Items are keyed by their id and content hash (``item_key``), so a changed file is recomputed.
An id's latest event decides its state: a failure is a record, not a finished item, so reruns
retry it, and an item that later succeeds is no longer listed as failed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from calm.durable import fsync_dir, pwrite_all, write_all, write_atomic
from calm.features import HeadFeatures, HeadIndex
from calm.fingerprint import canonical_json

try:
    import fcntl
except ImportError:  # not on Windows: writers are then not protected from each other
    fcntl = None

FORMAT = "calm-feature-store/1"
_KEY_FILE = "key.json"
_DATA_FILE = "data.f16"
_JOURNAL_FILE = "journal.jsonl"
_LOCK_FILE = "lock"


class StoreError(RuntimeError):
    """A store that cannot be used as asked (another key, damaged files, a concurrent writer)."""


class FeatureStore:
    """Head features of many items under one key; use :meth:`open`, write with :meth:`append` and
    :meth:`record_failure`, read with :meth:`read`. Also a context manager (closes on exit)."""

    def __init__(self, path: Path, key: dict[str, Any], heads: HeadIndex) -> None:
        self.path = path
        self.key = key
        self.heads = heads
        self._data_fd: int | None = None
        self._journal_fd: int | None = None
        self._lock_fd: int | None = None
        self._read_only: str | None = None  # why this store cannot be written, once lock() found out
        self._load(repair=False)

    @classmethod
    def open(cls, root: str | os.PathLike, key: dict[str, Any], heads: HeadIndex) -> "FeatureStore":
        """The store for ``key`` under ``root``, created if new; refuses a directory made for
        another key or head index."""
        try:
            canonical = canonical_json(key)
        except TypeError as error:
            raise TypeError(f"FeatureStore key: {error}") from None
        path = Path(root) / hashlib.sha256(canonical.encode()).hexdigest()[:16]
        meta = {"format": FORMAT, "key": json.loads(canonical), "heads": heads.to_dict()}
        key_file = path / _KEY_FILE
        if not key_file.exists():
            with _writing(path):
                path.mkdir(parents=True, exist_ok=True)
                write_atomic(key_file, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        try:
            stored = json.loads(key_file.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"{key_file}: unreadable store key ({error})") from error
        if stored != meta:
            raise StoreError(
                f"{key_file}: this directory holds features for another key or head index; "
                f"stored key {stored.get('key')!r}, asked for {meta['key']!r}"
            )
        return cls(path, meta["key"], heads)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What determined these features (the store's key)."""
        return dict(self.key)

    @staticmethod
    def item_key(item_id: str, audio_hash: str, video_hash: str | None = None) -> str:
        """The key of one item's features: its id and the content hash of its input file(s)."""
        parts = [item_id, audio_hash] + ([video_hash] if video_hash is not None else [])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def done_keys(self) -> set[str]:
        """Item keys whose features are stored (failed items are not done)."""
        return set(self._key_row)

    def failures(self) -> dict[str, str]:
        """Item id -> reason, for items whose latest record is a failure."""
        return dict(self._failed)

    def __len__(self) -> int:
        return len(self._id_row)

    def append(self, item_keys: Sequence[str], ids: Sequence[str], X: np.ndarray) -> None:
        """Store one batch of features ``X`` [B, K, D] (cast to float16); durable on return.

        Rows whose item key is already stored (by this or another process) are not stored again."""
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[0] != len(ids) or len(item_keys) != len(ids):
            raise ValueError(
                f"append: X must be [B, K, D] with B = len(ids) = len(item_keys), got X {X.shape}, "
                f"{len(ids)} ids, {len(item_keys)} keys"
            )
        if X.shape[1] != len(self.heads):
            raise ValueError(f"append: X has {X.shape[1]} heads, the store's head index has {len(self.heads)}")
        if self._dim is not None and X.shape[2] != self._dim:
            raise ValueError(f"append: X has head dimension {X.shape[2]}, the store holds {self._dim}")
        with np.errstate(over="ignore"):  # overflow shows as inf, refused just below
            rows = np.ascontiguousarray(X, dtype=np.float16)
        bad = ~np.isfinite(rows).reshape(len(ids), -1).all(axis=1)
        if bad.any():
            named = [ids[i] for i in np.flatnonzero(bad)[:3]]
            raise ValueError(f"append: non-finite features (NaN, inf or beyond float16 range) for {named}")
        self.lock()
        new = [i for i, key in enumerate(item_keys) if key not in self._key_row]
        if len(new) < len(ids):
            rows, item_keys, ids = rows[new], [item_keys[i] for i in new], [ids[i] for i in new]
        if len(ids) == 0:
            return
        if self._read_only is not None:
            raise StoreError(self._read_only)
        dim, payload = X.shape[2], rows.tobytes()
        with _writing(self.path / _DATA_FILE):
            pwrite_all(self._data_fd, payload, self._rows * len(self.heads) * dim * 2)
            os.fsync(self._data_fd)
        record = {"start": self._rows, "n": len(ids), "d": dim, "keys": list(item_keys), "ids": list(ids),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        self._journal(record)
        self._apply(record)

    def record_failure(self, item_key: str, item_id: str, reason: str) -> None:
        """Record that an item could not be processed; durable on return. The same failure as the
        item's latest record is not written again (reruns retry failed items)."""
        self.lock()
        if self._failed_keys.get(item_key) == (item_id, str(reason)):
            return
        record = {"failed": item_key, "id": item_id, "reason": str(reason)}
        if self._read_only is None:  # a store that cannot be written keeps it in memory (reruns retry anyway)
            self._journal(record)
        self._apply(record)

    def read(self, ids: Sequence[str] | None = None, *, item_keys: Sequence[str] | None = None,
             in_store_order: bool = False) -> HeadFeatures:
        """Stored features, memory-mapped: every stored item (by ``ids=None``, in store order), or
        the given ids (their latest rows) or item keys, in the order asked, or with
        ``in_store_order`` in the order they were stored.

        Failed items, and items whose stored rows are damaged (their batch fails its check), are
        left out of ``X`` and listed in ``failed``; ids or keys neither stored nor failed raise
        KeyError. Rows that come out in store order and were stored together (a contiguous run) stay
        a view of the memory map; others are gathered into memory.
        """
        if ids is not None and item_keys is not None:
            raise ValueError("read: pass ids or item_keys, not both")
        if item_keys is not None:
            wanted = [(self._key_row.get(k), k) for k in item_keys]
            failed = dict(self._failed_keys[k] for row, k in wanted if row is None and k in self._failed_keys)
            missing = [k for row, k in wanted if row is None and k not in self._failed_keys]
        elif ids is not None:
            wanted = [(self._id_row.get(i), i) for i in ids]
            failed = {i: self._failed[i] for i in ids if i in self._failed}
            missing = [i for row, i in wanted if row is None and i not in failed]
        else:
            wanted = sorted((row, i) for i, row in self._id_row.items())
            failed = self.failures()
            missing = []
        if missing:
            raise KeyError(f"{self.path}: no stored features for {len(missing)} item(s), e.g. {missing[:3]}")
        if in_store_order:
            wanted = sorted((row, name) for row, name in wanted if row is not None)
        damaged = self._damaged({row for row, _ in wanted if row is not None})
        for row in sorted(damaged):
            failed[self._row_ids[row]] = damaged[row]
        rows = np.array([row for row, _ in wanted if row is not None and row not in damaged], dtype=np.int64)
        row_ids = [self._row_ids[r] for r in rows.tolist()]
        return HeadFeatures(self._gather(rows), self.heads, row_ids, self.fingerprint, failed)

    def close(self) -> None:
        """Release the write lock and file handles (reading stays possible)."""
        for name in ("_data_fd", "_journal_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, {len(self)} items, {len(self._failed)} failed)"

    # -- internals -----------------------------------------------------------------------------

    def _data(self) -> np.ndarray:
        """data.f16 memory-mapped as [rows, K, D] (the rows the journal vouches for)."""
        shape = (self._rows, len(self.heads), self._dim or 0)
        return np.memmap(self.path / _DATA_FILE, dtype=np.float16, mode="r", shape=shape)

    def _damaged(self, rows: set[int]) -> dict[int, str]:
        """Row -> reason, for the rows among ``rows`` whose batch fails its check (each batch is
        checked once per open store: its checksum, or, written without one, finite values)."""
        damaged: dict[int, str] = {}
        data = self._data() if rows else None
        for start, n, digest in self._batches:
            touched = [row for row in range(start, start + n) if row in rows]
            if touched and start not in self._checked:
                self._checked[start] = _fault(data[start : start + n], digest)
            if touched and self._checked[start]:
                ids = self._row_ids[start : start + n]
                named = ", ".join(ids[:3]) + (f" and {n - 3} more" if n > 3 else "")
                damaged.update(dict.fromkeys(touched, (
                    f"{self.path / _DATA_FILE}: the stored features of {named} (rows {start}..{start + n - 1}) "
                    f"{self._checked[start]}: the file was damaged after they were written; they are not used, "
                    "and extracting again recomputes them")))
        return damaged

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        dim = self._dim or 0
        if rows.size == 0 or self._rows == 0:
            return np.zeros((0, len(self.heads), dim), dtype=np.float16)
        data = self._data()
        if np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
            return data[rows[0] : rows[0] + rows.size]
        return np.asarray(data[rows])

    def _load(self, repair: bool) -> None:
        """Rebuild the in-memory index from the journal; with ``repair`` (write lock held), cut
        off a torn journal tail and data beyond the last journalled row."""
        self._rows = 0
        self._dim: int | None = None
        self._key_row: dict[str, int] = {}
        self._id_row: dict[str, int] = {}
        self._row_ids: list[str] = []
        self._failed: dict[str, str] = {}
        self._failed_keys: dict[str, tuple[str, str]] = {}
        self._batches: list[tuple[int, int, str | None]] = []  # (first row, rows, sha256 or None)
        self._checked: dict[int, str | None] = {}  # batch start -> why it is damaged (None: intact)
        journal = self.path / _JOURNAL_FILE
        raw = journal.read_bytes() if journal.exists() else b""
        data_size = (self.path / _DATA_FILE).stat().st_size if (self.path / _DATA_FILE).exists() else 0
        good = 0  # bytes of the journal that hold complete, consistent records
        lines = raw.split(b"\n")
        for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: the part after the last newline
            try:
                record = json.loads(line)
                self._check(record, data_size)
            except (ValueError, KeyError, TypeError) as error:
                if number < len(lines) - 1:
                    raise StoreError(f"{journal}: line {number} is damaged ({error}); the store cannot be trusted") from error
                break  # the last line, written but not whole when the writer died
            self._apply(record)
            good += len(line) + 1
        if repair:
            if good < len(raw):
                os.truncate(journal, good)
            committed = self._rows * len(self.heads) * (self._dim or 0)
            if data_size > committed * 2:
                os.truncate(self.path / _DATA_FILE, committed * 2)

    def _check(self, record: dict[str, Any], data_size: int) -> None:
        if "failed" in record:
            if not all(isinstance(record.get(field), str) for field in ("failed", "id", "reason")):
                raise ValueError("failure record without key, id or reason")
            return
        n, dim = int(record["n"]), int(record["d"])
        if record["start"] != self._rows or len(record["keys"]) != n or len(record["ids"]) != n:
            raise ValueError("rows out of sequence")
        if self._dim is not None and dim != self._dim:
            raise ValueError(f"head dimension {dim} after {self._dim}")
        if data_size < (self._rows + n) * len(self.heads) * dim * 2:
            raise ValueError("data file shorter than the journal says")

    def _apply(self, record: dict[str, Any]) -> None:
        if "failed" in record:
            self._failed[record["id"]] = record["reason"]
            self._failed_keys[record["failed"]] = (record["id"], record["reason"])
            self._id_row.pop(record["id"], None)
            self._key_row.pop(record["failed"], None)  # stored, then failed (damaged rows): extract again
            return
        self._dim = int(record["d"])
        self._batches.append((int(record["start"]), int(record["n"]), record.get("sha256")))
        for offset, (key, item_id) in enumerate(zip(record["keys"], record["ids"])):
            row = record["start"] + offset
            self._key_row[key] = row
            self._id_row[item_id] = row
            self._row_ids.append(item_id)
            self._failed.pop(item_id, None)
            self._failed_keys.pop(key, None)
        self._rows += int(record["n"])

    def lock(self) -> None:
        """Become the store's one writer (idempotent): take the write lock, then re-read what is
        stored, since another process may have written since this one opened it. A writer that
        holds the lock raises StoreError at once; a store that cannot be written (read-only file
        system or folder) stays a reader, and only storing features in it then raises."""
        if self._journal_fd is not None or self._read_only is not None:
            return
        try:
            self._lock_fd = os.open(self.path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            reason = f"{self.path}: cannot write the feature store ({error.strerror or error})"
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreError(reason) from error
            self._read_only = reason  # a reader, then: what is stored now, as it is
            self._load(repair=False)
            return
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.close()
                raise StoreError(f"{self.path}: another process is writing to this store") from None
        self._load(repair=True)  # under the lock: another writer may have appended since open
        with _writing(self.path):
            self._data_fd = os.open(self.path / _DATA_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
            self._journal_fd = os.open(self.path / _JOURNAL_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.path)

    def _journal(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()  # ASCII: a non-UTF-8 file name stays an escape
        size = os.fstat(self._journal_fd).st_size
        try:
            with _writing(self.path / _JOURNAL_FILE):
                write_all(self._journal_fd, line)
                os.fsync(self._journal_fd)
        except BaseException:
            os.ftruncate(self._journal_fd, size)  # never leave half a line for the next record
            raise


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing (read-only folder, full disk ...) into a StoreError naming ``path``."""
    try:
        yield
    except StoreError:
        raise
    except OSError as error:
        raise StoreError(f"{path}: cannot write the feature store ({error.strerror or error})") from error


def _fault(batch: np.ndarray, digest: str | None) -> str | None:
    """Why a stored batch cannot be trusted, or None."""
    if digest is not None:
        return None if hashlib.sha256(batch).hexdigest() == digest else "do not match their checksum in the journal"
    return None if np.isfinite(batch).all() else "hold NaN or inf, which a store never keeps"
