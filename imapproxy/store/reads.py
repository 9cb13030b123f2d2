"""Which cached bodies clients read, noted in memory and written to the store in batches.

A FETCH of a cached body must not cost a write transaction (an fsync) just to move
the body up the eviction order. Reads are noted here instead, and written when the
batch is due (many reads, or some time since the last write), before every eviction
(so the order it uses is current), and when the store closes. A crash loses at most
the last batch of stamps: some bodies then look older than they are, nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from imapproxy.store import usage
from imapproxy.store._tx import Tx
from imapproxy.types import AccountId, BlobId

#: A batch is due after this many distinct bodies, or this many seconds.
MOST = 500
EVERY = 30.0


class ReadLog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pending: dict[tuple[AccountId, BlobId], int] = {}
        self._since = clock()

    def note(self, account: AccountId, blobs: Iterable[BlobId]) -> None:
        stamp = usage.now_stamp()
        for blob in blobs:
            self._pending[(account, blob)] = stamp

    def due(self) -> bool:
        return bool(self._pending) and (
            len(self._pending) >= MOST or self.clock() - self._since >= EVERY
        )

    def pending(self) -> dict[tuple[AccountId, BlobId], int]:
        return dict(self._pending)

    def apply(self, tx: Tx, reads: dict[tuple[AccountId, BlobId], int]) -> None:
        """Write reads (from ``pending()``) in tx; safe to run again (stamps only grow)."""
        for (account, blob), stamp in reads.items():
            usage.touch(tx, account, blob, stamp)

    def written(self, reads: dict[tuple[AccountId, BlobId], int]) -> None:
        """reads were committed: forget those not noted again since."""
        for key, stamp in reads.items():
            if self._pending.get(key) == stamp:
                del self._pending[key]
        self._since = self.clock()
