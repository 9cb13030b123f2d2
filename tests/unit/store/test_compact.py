"""`imapproxy compact`: the file shrinks, nothing is lost, and it never runs under a proxy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, usage
from imapproxy.store.cache import Kind
from imapproxy.store.compact import TMP_NAME, StoreBusy, compact
from imapproxy.types import AccountId, BlobId

COUNT = 200
SIZE = 20_000


def _fill(path: Path) -> AccountId:
    store = Store(path)
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
        store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))

        def put(tx: Tx) -> None:
            for blob in range(1, COUNT + 1):
                cache.put(tx, account, BlobId(blob), Kind.FULL, bytes([blob % 256]) * SIZE)

        store.write(put)
        # Free most of it again (what an eviction or a deleted folder does).
        store.write(
            lambda tx: [cache.drop_all(tx, account, BlobId(b)) for b in range(11, COUNT + 1)]
        )
        return account
    finally:
        store.close()


def test_compaction_shrinks_the_file_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    account = _fill(path)
    before = (path / "data.mdb").stat().st_size
    done = compact(path)
    assert done.before == before
    assert done.after < before / 4, (before, done.after)
    assert (path / "data.mdb").stat().st_size == done.after
    assert not (path / TMP_NAME).exists()
    store = Store(path)
    try:
        for blob in range(1, 11):
            data = store.read(lambda tx, b=blob: cache.get(tx, account, BlobId(b), Kind.FULL))
            assert data == bytes([blob % 256]) * SIZE
        assert store.read(lambda tx: usage.total(tx, account)) == 10 * SIZE
        assert [m.name for m in store.read(lambda tx: mailboxes.all_mailboxes(tx, account))] == [
            "INBOX"
        ]
        store.write(lambda tx: cache.put(tx, account, BlobId(99), Kind.FULL, b"after"))
    finally:
        store.close()


def test_compaction_refuses_while_the_replica_is_open(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    _fill(path)
    store = Store(path)
    try:
        with pytest.raises(StoreBusy, match="in use"):
            compact(path)
    finally:
        store.close()
    compact(path)  # once closed, it runs


def test_a_store_does_not_open_during_compaction(tmp_path: Path) -> None:
    from imapproxy.store.compact import StoreLock

    path = tmp_path / "replica"
    _fill(path)
    lock = StoreLock.exclusive(path)
    try:
        with pytest.raises(StoreBusy, match="being compacted"):
            Store(path)
    finally:
        lock.release()
    Store(path).close()


def test_a_copy_left_by_a_crash_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    account = _fill(path)
    leftover = path / TMP_NAME
    leftover.mkdir()
    (leftover / "data.mdb").write_bytes(b"half a copy")
    store = Store(path)  # the proxy never looks at it
    try:
        assert store.read(lambda tx: cache.has(tx, account, BlobId(1), Kind.FULL))
    finally:
        store.close()
    compact(path)
    assert not leftover.exists()


def test_the_command(tmp_path: Path) -> None:
    _fill(tmp_path / "replica")
    run = subprocess.run(
        [sys.executable, "-m", "imapproxy", "compact", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"compacted {tmp_path / 'replica'}: ")
    missing = subprocess.run(
        [sys.executable, "-m", "imapproxy", "compact", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("imapproxy: error: no replica in")
