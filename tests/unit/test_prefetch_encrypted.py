"""`imapproxy prefetch` on an encrypted account: its password must open the key first."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from imapproxy import prefetch_command
from imapproxy.store import Store, account_keys, accounts, key_drop, key_wrapping, mailboxes
from imapproxy.store.keyring import AccountKey
from imapproxy.store.verifier import ScryptParams

CHEAP = ScryptParams(2**10, 8, 1)


def _encrypted_store(path: Path) -> accounts.Account:
    store = Store(path)
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "ann"))
        store.write(lambda tx: mailboxes.create(tx, account.id, "INBOX"))
        key = AccountKey.new()
        wrapping = key_wrapping.wrap(key.data_key, "password", b"ann", account.id, b"pw", 0, CHEAP)
        field = {"wrappings": [wrapping], **key_drop.new_pair(key, account.id)}
        store.write(lambda tx: account_keys.encrypt_in_place(tx, account, key, field))
    finally:
        store.close()
    return account


@pytest_twisted.ensureDeferred
async def test_a_password_that_does_not_open_the_key_stops_prefetch(tmp_path: Path) -> None:
    account = _encrypted_store(tmp_path / "replica")
    store = Store(tmp_path / "replica")
    try:
        with pytest.raises(prefetch_command.PrefetchError, match="encrypted"):
            await prefetch_command._unlock(store, account, "ann", b"changed")
        assert store.keyring.is_locked(account.id)
        await prefetch_command._unlock(store, account, "ann", b"pw")
        assert store.read(lambda tx: mailboxes.find(tx, account.id, "INBOX")) is not None
    finally:
        store.close()
