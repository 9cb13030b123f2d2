"""`imapproxy compact`: give back the disk space LMDB keeps after content was freed.

LMDB reuses the pages of deleted records but never shrinks its file, so a cache that
was trimmed (a lowered limit, a deleted folder) still takes its old size on disk.
Compaction writes a compacted copy (``Environment.copy(compact=True)``: only the live
pages, in order) and swaps it in.

Only with no proxy running on the replica. A running proxy has the old file mapped:
it would go on writing to the file that was swapped out, and those writes would be
lost. So every ``Store`` holds a shared lock (``flock``) on ``imapproxy.lock`` in the
replica directory for as long as it is open, and compaction takes it exclusively
without waiting: it refuses, with a message, while a proxy (or `imapproxy prefetch`)
has the replica open, and a proxy started during compaction refuses to start rather
than open the file being replaced. `imapproxy status` may read meanwhile (it takes no
lock; it reads one file or the other, whole).

Crash-safe at every step: the copy goes to ``compact.tmp/`` inside the replica
directory (LMDB ignores it), is flushed to disk and checked (every database has the
same number of records as the original) before one ``rename`` puts it in place of
``data.mdb``; the directory is then flushed. A crash before the rename leaves the old
file untouched (the next compaction removes the leftover copy); after it, the new
file is complete.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import lmdb

LOCK_NAME = "imapproxy.lock"
TMP_NAME = "compact.tmp"
DATA = "data.mdb"


class StoreBusy(Exception):
    """The replica is in use by another process; the message says what to do."""


class StoreLock:
    """A flock on the replica directory's lock file, held for as long as it is open."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def _take(cls, path: Path, mode: int, busy: str) -> StoreLock:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(f"{path} {busy}") from None
        return cls(fd)

    @classmethod
    def shared(cls, path: Path) -> StoreLock:
        """For a Store: refuses (StoreBusy) while a compaction runs."""
        return cls._take(
            path,
            fcntl.LOCK_SH,
            "is being compacted (imapproxy compact); start again when it is done",
        )

    @classmethod
    def exclusive(cls, path: Path) -> StoreLock:
        """For compaction: refuses (StoreBusy) while any Store has the replica open."""
        return cls._take(
            path, fcntl.LOCK_EX, "is in use (a running proxy, or imapproxy prefetch): stop it first"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass(frozen=True)
class Compacted:
    before: int
    after: int


def compact(path: Path) -> Compacted:
    """Compact the replica in directory path (see the module docstring)."""
    data = path / DATA
    if not data.is_file():
        raise FileNotFoundError(f"no replica in {path}")
    lock = StoreLock.exclusive(path)
    try:
        tmp = path / TMP_NAME
        shutil.rmtree(tmp, ignore_errors=True)  # a copy left by a crash: never used
        tmp.mkdir(mode=0o700)
        before = data.stat().st_size
        counts = _copy(path, tmp)
        _fsync_file(tmp / DATA)
        copied = _counts(tmp)
        if copied != counts:
            raise RuntimeError(f"the compacted copy differs from the replica ({tmp} kept)")
        os.replace(tmp / DATA, data)
        _fsync_dir(path)
        shutil.rmtree(tmp, ignore_errors=True)
        return Compacted(before, data.stat().st_size)
    finally:
        lock.release()


def _open(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), readonly=True, max_dbs=64, subdir=True, lock=False)


def _copy(path: Path, tmp: Path) -> dict[bytes, int]:
    env = _open(path)
    try:
        counts = _env_counts(env)
        env.copy(str(tmp), compact=True)
        return counts
    finally:
        env.close()


def _counts(path: Path) -> dict[bytes, int]:
    env = _open(path)
    try:
        return _env_counts(env)
    finally:
        env.close()


def _env_counts(env: lmdb.Environment) -> dict[bytes, int]:
    """Records per named database (and in the main one, which lists them)."""
    counts = {b"": int(env.stat()["entries"])}
    with env.begin() as txn:
        names = [bytes(key) for key, _ in txn.cursor()]
    for name in names:
        db = env.open_db(name, create=False)
        with env.begin() as txn:
            counts[name] = int(txn.stat(db)["entries"])
    return counts


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
