"""The LMDB environment: open, named databases, and transactions that survive map growth.

LMDB fails a write with MapFullError when the memory map is full. We double the map
and retry the whole transaction body instead, so a growing cache never turns into a
failed client command. Every transaction is short and synchronous on the reactor
thread: nothing here ever waits on the network.

Durability: a write is on disk when ``write`` returns (LMDB syncs the data pages, then
we sync again for the meta page: MDB_NOMETASYNC plus ``sync``), except a write made
with ``durable=False``: content fetched from the upstream, which a power loss may take
back (it is fetched again) but never half (the meta page still follows its data, so
the file stays whole). A first body read through the proxy waited 1.5 to 5 ms for the
second sync, under load, on top of its round trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmdb

T = TypeVar("T")

#: The named databases; see schema.py for what each holds.
DATABASES = (
    b"meta",
    b"accounts",
    b"mailboxes",
    b"messages",
    b"upstream_uids",
    b"cache",
    b"changes",
    b"outbox",
    b"links",
    b"blob_refs",
    b"usage",
    b"lru",
    b"twins",
    b"twin_of",
    b"held",
    b"gm_msgid",
    b"gm_of",
)

INITIAL_MAP_SIZE = 256 * 2**20


class Environment:
    """An LMDB environment in a 0700 directory, with all our named databases open."""

    def __init__(self, path: Path, map_size: int = INITIAL_MAP_SIZE) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        self.path = path
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(DATABASES) + 2,
            subdir=True,
            sync=True,
            metasync=False,
            mode=0o600,
        )
        self.dbs: dict[bytes, lmdb._Database] = {}
        #: Moves each time the map may have moved (set_mapsize maps the file anew).
        self.map_generation = 0
        with self.env.begin(write=True) as txn:
            for name in DATABASES:
                self.dbs[name] = self.env.open_db(name, txn=txn)

    def db(self, name: bytes) -> lmdb._Database:
        return self.dbs[name]

    def read(self, body: Callable[[lmdb.Transaction], T]) -> T:
        while True:
            try:
                with self.env.begin(write=False) as txn:
                    return body(txn)
            except lmdb.MapResizedError:
                self.adopt_size()

    def write(self, body: Callable[[lmdb.Transaction], T], durable: bool = True) -> T:
        """Run body in a write transaction; on a full map, grow it and run body again.
        ``durable``: on disk when this returns (see the module docstring).

        body must not have side effects outside the transaction, since it may run twice.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    result = body(txn)
            except lmdb.MapFullError:
                self.grow()
            except lmdb.MapResizedError:
                self.adopt_size()
            else:
                if durable:
                    self.env.sync(True)
                return result

    def grow(self) -> None:
        self._remap(self.env.info()["map_size"] * 2)

    def adopt_size(self) -> None:
        """Another process (`imapproxy prefetch` beside a running proxy) grew the map."""
        self._remap(0)

    def _remap(self, size: int) -> None:
        try:
            self.env.set_mapsize(size)
        finally:
            self.map_generation += 1

    def close(self) -> None:
        self.env.close()
