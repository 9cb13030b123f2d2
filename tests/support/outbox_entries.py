"""Outbox entries written from outside the proxy, exactly as a client's STORE commits
them: what a proxy killed right after the commit (or an account closed with it still
queued) leaves on disk for the next run to replay."""

from __future__ import annotations

from pathlib import Path

from imapproxy.outbox.operations import FlagChange, StoreFlags
from imapproxy.outbox.refs import ref_of
from imapproxy.store import Store, accounts, mailboxes, messages, outbox


def commit_flag_change(state: Path, upstream: str, user: str, flag: str) -> None:
    """Queue ``+flag`` on the first INBOX message of user's account (LMDB takes a second
    process's writes, so the proxy may be running)."""
    store = Store(state / "replica")
    try:
        account = store.read(lambda tx: accounts.find_account(tx, upstream, user))
        assert account is not None
        inbox = store.read(lambda tx: mailboxes.find(tx, account.id, "INBOX"))
        assert inbox is not None
        ref = store.read(
            lambda tx: ref_of(tx, account.id, next(messages.iterate(tx, account.id, inbox.id)))
        )
        operation = StoreFlags(
            inbox.id, inbox.name, inbox.upstream_uidvalidity, (FlagChange((flag,), (), (ref,)),)
        )
        store.write(lambda tx: outbox.add(tx, account.id, operation.name, operation.to_json()))
    finally:
        store.close()
