"""The LMDB replica: accounts, mailboxes, messages, cached content, change log, outbox.

Callers pass a function of one transaction to ``Store.read`` or ``Store.write`` and
use the domain modules (``mailboxes``, ``messages``, ``cache``, ``outbox``,
``accounts``) inside it, so that related changes (a flag change and the outbox entry
it answers) commit together. No transaction outlives the call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from imapproxy.store import accounts, cache, mailboxes, messages, outbox
from imapproxy.store._env import Environment
from imapproxy.store._tx import Tx
from imapproxy.store.schema import SchemaError, check_or_initialize

T = TypeVar("T")

__all__ = [
    "SchemaError",
    "Store",
    "Tx",
    "accounts",
    "cache",
    "mailboxes",
    "messages",
    "outbox",
]


class Store:
    def __init__(self, path: Path, map_size: int | None = None) -> None:
        self._env = Environment(path) if map_size is None else Environment(path, map_size)
        self.write(check_or_initialize)

    def read(self, body: Callable[[Tx], T]) -> T:
        return self._env.read(lambda txn: body(Tx(txn, self._env.dbs)))

    def write(self, body: Callable[[Tx], T]) -> T:
        return self._env.write(lambda txn: body(Tx(txn, self._env.dbs)))

    def close(self) -> None:
        self._env.close()
