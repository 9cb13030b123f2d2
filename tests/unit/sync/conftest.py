"""Shared by the sync unit tests: a replica with one INBOX, and running a sync that
finishes synchronously against a scripted upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from imapproxy.store import Store, accounts, mailboxes


def run_now(coro: Any) -> Any:
    """The result of coro, which must finish without the reactor (scripted upstream)."""
    result = defer.ensureDeferred(coro)
    out: list[Any] = []
    result.addBoth(out.append)
    assert out, "the sync did not finish synchronously"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Any]:
    """(store, INBOX) of a fresh replica."""
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    yield store, box
    store.close()
