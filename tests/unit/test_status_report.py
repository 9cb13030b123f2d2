"""The status report reads the outbox defensively and the status record as kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapproxy.status_report import StatusError, as_text, collect
from imapproxy.store import Store, accounts, cache, outbox
from imapproxy.store import status as status_record
from imapproxy.store._tx import u32, u64


def test_queued_and_refused_changes_and_cache_size(tmp_path: Path) -> None:
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann"))
        store.write(lambda tx: outbox.add(tx, account.id, "store_flags", {"mailbox": 1}))
        store.write(lambda tx: outbox.add(tx, account.id, "append", {"blob": 7}))
        # An entry the upstream refused, as a reworked outbox might mark it.
        store.write(
            lambda tx: tx.put_record(
                b"outbox",
                u32(account.id) + u64(99),
                {"op": "append", "args": {}, "created": 0, "state": "refused"},
            )
        )
        store.write(lambda tx: tx.put(b"outbox", u32(account.id) + u64(100), b"not json"))
        store.write(lambda tx: cache.put(tx, account.id, 7, cache.Kind.FULL, b"x" * 1234))
        store.write(lambda tx: cache.put(tx, account.id, 7, cache.Kind.ENVELOPE, b"(NIL)"))
        store.set_cache_limit(account.id, 2**20)
        record = dict(status_record.DEFAULTS, online=True, since=1000.0, served_bytes=5)
        store.write(lambda tx: status_record.put(tx, account.id, record))
    finally:
        store.close()

    (report,) = collect(tmp_path, now=2000.0)
    assert report["user"] == "ann"
    assert report["queued_changes"] == 3
    assert report["refused_changes"] == 1
    assert report["cache_bytes"] == 1234 + 5
    assert report["cache_body_bytes"] == 1234
    assert report["cache_limit"] == 2**20
    assert "cache size:       1.2 KiB (bodies 1.2 KiB of the 1.0 MiB limit)" in as_text([report])
    assert report["served_from_cache_bytes"] == 5
    # No live process keeps the record: its link state is not presented as current.
    assert report["proxy_running"] is False and report["online"] is None
    assert "the proxy is not running (last known: online" in as_text([report])


def test_missing_replica_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match="no replica"):
        collect(tmp_path)


def test_an_encrypted_account_is_reported_without_its_key(tmp_path: Path) -> None:
    """Depth and refusals from what stays clear; no name or content; 'encrypted, locked'."""
    from imapproxy.store import account_keys, key_drop, mailboxes
    from imapproxy.store.keyring import AccountKey

    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann"))
        store.write(lambda tx: mailboxes.create(tx, account.id, "Zebra folder"))
        store.write(lambda tx: outbox.add(tx, account.id, "create", {"name": "Zebra"}))
        gone = store.write(lambda tx: outbox.add(tx, account.id, "create", {"name": "Z2"}))
        store.write(lambda tx: outbox.set_refused(tx, gone, outbox.REFUSED, "no"))
        store.write(lambda tx: outbox.add(tx, account.id, "create", {"name": "Z3"}))
        key = AccountKey.new()
        field = {"wrappings": [], **key_drop.new_pair(key, account.id)}
        store.write(lambda tx: account_keys.encrypt_in_place(tx, account, key, field))
    finally:
        store.close()

    (report,) = collect(tmp_path, now=2000.0)
    assert report["encryption"] == "encrypted, locked"
    assert report["queued_changes"] == 2
    assert report["refused_changes"] == 1
    text = as_text([report])
    assert "encrypted, locked" in text and "Zebra" not in text
    from imapproxy.status_report import as_json

    assert "Zebra" not in as_json([report]) and '"encrypted, locked"' in as_json([report])
