"""What an account's runtime tells `imapproxy status`: link up or down, sync, byte counts.

The record (store/status.py) is rewritten at once when the link's state changes or a
background sync completes, since those are rare and worth being exact about; the
byte counters change with every FETCH, so they are kept in memory and flushed every
FLUSH_SECONDS (and on shutdown). A failure to write the record is logged and never
reaches a client command.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from imapproxy.metrics import METRICS
from imapproxy.store import Store
from imapproxy.store import status as status_record
from imapproxy.types import AccountId

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0


class LinkStatus:
    def __init__(self, reactor: Any, store: Store, account: AccountId) -> None:
        self.reactor = reactor
        self.store = store
        self.account = account
        self._served = 0
        self._fetched = 0
        self._flush_call: Any = None
        self._closed = False
        self._record = self._read()
        self._record["pid"] = os.getpid()
        self._write()

    @property
    def online(self) -> bool | None:
        return self._record["online"]  # type: ignore[no-any-return]

    def went_online(self) -> None:
        if self._record["online"] is not True:
            self._record.update(online=True, since=self.reactor.seconds(), reason="")
            log.info("upstream link is up")
            self._write()

    def went_offline(self, reason: str) -> None:
        if self._record["online"] is not False:
            self._record.update(online=False, since=self.reactor.seconds(), reason=reason)
            log.info("upstream link is down: %s", reason)
            self._write()

    def synced(self) -> None:
        self._record["last_sync"] = self.reactor.seconds()
        self._write()

    def served(self, count: int) -> None:
        self._served += count
        METRICS.client_bytes.inc(count)
        self._schedule_flush()

    def fetched(self, count: int) -> None:
        self._fetched += count
        METRICS.upstream_bytes.inc(count)
        self._schedule_flush()

    def close(self) -> None:
        """Flush what is counted; the record stays, with this pid, as the last state seen."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._write()
        self._closed = True

    # ----------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._closed or (self._flush_call is not None and self._flush_call.active()):
            return
        self._flush_call = self.reactor.callLater(FLUSH_SECONDS, self._write)

    def _read(self) -> dict[str, Any]:
        try:
            return self.store.read(lambda tx: status_record.get(tx, self.account))
        except Exception:
            log.exception("reading the status record failed")
            return dict(status_record.DEFAULTS)

    def _write(self) -> None:
        if self._closed:
            return
        served, fetched = self._served, self._fetched
        record = dict(self._record, updated=self.reactor.seconds())

        def write(tx: Any) -> None:
            stored = status_record.get(tx, self.account)
            record["served_bytes"] = stored["served_bytes"] + served
            record["fetched_bytes"] = stored["fetched_bytes"] + fetched
            status_record.put(tx, self.account, record)

        try:
            self.store.write(write)
        except Exception:
            log.exception("writing the status record failed")
            return
        self._served -= served
        self._fetched -= fetched
