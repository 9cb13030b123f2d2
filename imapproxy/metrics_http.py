"""Serve ``METRICS`` over HTTP (Twisted Web) and read the proxy's state for each scrape.

``GET /metrics`` answers the Prometheus text; anything else is 404. The exporter listens
on loopback unless the configuration explicitly allows another address (config.py,
``metrics_allow_remote``): the numbers name no user, but they tell an outsider how busy
the proxy is and when its link is down.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.web import http
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site

from imapproxy.metrics import CONTENT_TYPE, METRICS, Metrics, Sample
from imapproxy.router import LoginRouter
from imapproxy.store import Store
from imapproxy.store import outbox as outbox_store
from imapproxy.store._tx import Tx, decode
from imapproxy.types import AccountId

#: Summing the cache means reading every cached value; at most this often.
CACHE_SIZE_SECONDS = 60.0


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        if request.path != b"/metrics":
            return NoResource().render(request)  # type: ignore[no-any-return]
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self.metrics.render().encode()


class _Quiet(Site):
    """No access log: a scraper every 15 s would drown the one-line-per-event log."""

    def log(self, request: http.Request) -> None:
        pass


async def listen(reactor: Any, host: str, port: int, metrics: Metrics = METRICS) -> Any:
    """Listen for scrapes on host:port; returns the listening port."""
    endpoint_type = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
    endpoint = endpoint_type(reactor, port, interface=host)
    return await endpoint.listen(_Quiet(MetricsResource(metrics)))


class ProxyCollector:
    """The state gauges, read from the router (sessions, open accounts and their links)
    and the store (outbox and cache of every account, open or not)."""

    def __init__(self, router: LoginRouter, store: Store) -> None:
        self.router = router
        self.store = store
        self._cache_bytes: tuple[float, int] | None = None

    def __call__(self) -> dict[str, list[Sample]]:
        runtimes = [rt for route in self.router.routes for rt in route.registry.runtimes()]
        states = {"online": 0, "offline": 0, "unknown": 0}
        for runtime in runtimes:
            online = runtime.status.online
            states["unknown" if online is None else "online" if online else "offline"] += 1
        queued, refused = self.store.read(_outbox_totals)
        return {
            "sessions": [((), self.router.idle.sessions)],
            "accounts": [((("state", state),), count) for state, count in states.items()],
            "upstream_connections": [((), sum(1 for rt in runtimes if rt.link.logged_in))],
            "outbox_queued": [((), queued)],
            "outbox_refused": [((), refused)],
            "cache_bytes": [((), self._cache_size())],
        }

    def _cache_size(self) -> int:
        now = time.monotonic()
        if self._cache_bytes is None or now - self._cache_bytes[0] > CACHE_SIZE_SECONDS:
            self._cache_bytes = (now, self.store.read(_cache_total))
        return self._cache_bytes[1]


def _account_ids(tx: Tx) -> list[AccountId]:
    return [AccountId(int(decode(value)["id"])) for _, value in tx.scan(b"accounts", b"")]


def _outbox_totals(tx: Tx) -> tuple[int, int]:
    queued = refused = 0
    for account in _account_ids(tx):
        entries = outbox_store.pending(tx, account)
        queued += len(entries)
        refused += len(outbox_store.refused(tx, account))
    return queued, refused


def _cache_total(tx: Tx) -> int:
    cursor = tx.txn.cursor(db=tx.dbs[b"cache"])
    return sum(len(value) for value in cursor.iternext(keys=False, values=True))
