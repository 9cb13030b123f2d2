"""Wires configuration → store → one account registry per upstream → the login router
→ listening server(s).

A twisted.application Service, so the proxy starts and stops as a unit: on stop it
stops accepting (on every listener: plain/STARTTLS ``listen`` and implicit-TLS
``listen_tls``), logs out of the upstream connections and closes the store.

Under systemd it reports readiness, status and watchdog pings (``sd_notify``), and a
listener may be a socket systemd opened (``systemd:domain=INET:name=imap``, socket
activation): the rule that a plain listener beyond loopback needs TLS is then applied
to the address the socket turns out to have.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.protocols.tls import TLSMemoryBIOFactory

from imapproxy import metrics_http
from imapproxy.config import (
    Config,
    ConfigError,
    Listener,
    UpstreamConfig,
    check_plaintext_listener,
)
from imapproxy.login_limits import LoginLimiter, LoginPenalty
from imapproxy.metrics import METRICS
from imapproxy.metrics_http import ProxyCollector
from imapproxy.protocol import DEFAULT_MAX_LITERAL
from imapproxy.registry import AccountRegistry
from imapproxy.router import LoginRouter, Route
from imapproxy.sd_notify import SystemdNotifier
from imapproxy.server.connection import ServerFactory
from imapproxy.server.session import ServerContext
from imapproxy.store import Store
from imapproxy.sync.prefetch import PrefetchPolicy
from imapproxy.upstream.tls import check_ca_file

log = logging.getLogger("imapproxy")


class ProxyService(Service):
    def __init__(self, reactor: Any, config: Config) -> None:
        self.reactor = reactor
        self.config = config
        self.store: Store | None = None
        self.router: LoginRouter | None = None
        self.notifier: SystemdNotifier | None = None
        #: The listening ports, in the order of ``config.listeners``.
        self.ports: list[Any] = []
        #: The metrics exporter's port and the collector it scrapes (``config.metrics``).
        self.metrics_port: Any = None
        self._collector: ProxyCollector | None = None

    async def start(self) -> None:
        """Open the store and listen; raises on a port in use (any listener)."""
        config = self.config
        for upstream in config.upstreams:
            if upstream.ca_file is not None:
                check_ca_file(upstream.ca_file)
        store = self.store = Store(config.state_dir / "replica")
        # One limiter for every upstream: a source's failures count wherever it guesses.
        limiter = LoginLimiter(
            self.reactor,
            LoginPenalty(
                initial=config.login_delay,
                maximum=config.login_delay_max,
                user_maximum=min(LoginPenalty.user_maximum, config.login_delay_max),
            ),
        )
        routes = [
            Route(
                u,
                AccountRegistry(
                    self.reactor,
                    store,
                    u.address,
                    u.ca_file,
                    limiter=limiter,
                    write_wait=config.write_wait,
                    # Bodies from the upstream may be as large as what clients may APPEND.
                    max_message=max(config.max_append, DEFAULT_MAX_LITERAL),
                    prefetch=PrefetchPolicy(
                        u.prefetch.folders, u.prefetch.max_age_days, u.prefetch.max_body_size
                    ),
                    sync_every=u.freshness.sync_interval,
                    poll_every=u.freshness.poll_interval,
                    token_lifetime=u.offline_token_lifetime,
                    cache_limit=u.cache_limit,
                    encrypt=u.encrypt,
                ),
            )
            for u in config.upstreams
        ]
        self.router = LoginRouter(self.reactor, routes, config.account_idle_seconds)
        for route in routes:
            if route.upstream.oauth:
                # Which OAuth mechanisms to advertise: asked now, in the background.
                defer.ensureDeferred(route.registry.probe_mechanisms())
        tls_options = config.server_tls.options if config.server_tls is not None else None
        described = []
        try:
            for listener in config.listeners:
                port, actual = await self._listen(listener, tls_options)
                self.ports.append(port)
                described.append(f"{actual.describe()} ({_kind(actual, config)})")
            if config.metrics is not None:
                self.metrics_port = await metrics_http.listen(
                    self.reactor, config.metrics.host, config.metrics.port
                )
                described.append(f"http://{config.metrics.describe()}/metrics (metrics)")
        except BaseException:
            # All or nothing: a port in use on the second listener closes the first.
            ports, self.ports = self.ports, []
            for port in ports:
                await port.stopListening()
            raise
        if self.metrics_port is not None:
            self._collector = ProxyCollector(self.router, store)
            METRICS.add_collector(self._collector)
        self.running = True
        log.info(
            "imapproxy ready: listening on %s, upstream %s, state in %s",
            " and ".join(described),
            ", ".join(_describe_upstream(u, len(config.upstreams)) for u in config.upstreams),
            config.state_dir,
        )
        router = self.router
        assert router is not None
        listening = ", ".join(described)
        self.notifier = SystemdNotifier(
            self.reactor, lambda: f"{router.status()}; listening on {listening}"
        )
        self.notifier.ready()

    async def _listen(self, listener: Listener, tls_options: Any) -> tuple[Any, Listener]:
        """Listen; returns the port and the listener as bound (a socket from systemd
        has its address only now: the rules that depend on it are applied here)."""
        context = self._context(listener, tls_options)
        factory: Any = ServerFactory(context)
        if listener.implicit_tls:
            if tls_options is None:  # Config.build refuses this; never listen in clear
                raise ValueError("--listen-tls needs --tls-cert and --tls-key")
            factory = TLSMemoryBIOFactory(tls_options, False, factory)
        endpoint: Any
        if listener.endpoint is not None:
            endpoint = serverFromString(self.reactor, listener.endpoint)
        else:
            endpoint_type = TCP6ServerEndpoint if ":" in listener.host else TCP4ServerEndpoint
            endpoint = endpoint_type(self.reactor, listener.port, interface=listener.host)
        port = await endpoint.listen(factory)
        bound = port.getHost()
        host = getattr(bound, "host", "localhost")  # an AF_UNIX socket is local
        actual = Listener(host, getattr(bound, "port", 0), listener.implicit_tls)
        if listener.endpoint is not None:
            try:
                check_plaintext_listener(
                    actual,
                    self.config.tls_cert is not None,
                    self.config.allow_plaintext_listen,
                    "tls_cert/tls_key",
                )
            except ConfigError:
                await port.stopListening()
                raise
            context.require_tls_for_login = (
                tls_options is not None and self.config.requires_tls_for_login(actual)
            )
        return port, actual

    def _context(self, listener: Listener, tls_options: Any) -> ServerContext:
        """The implicit-TLS listener's sessions start secure: no STARTTLS, logins at once.
        The plain one offers STARTTLS when there is a certificate."""
        router = self.router
        assert router is not None
        logins = router.for_listener(listener)
        if listener.implicit_tls:
            return ServerContext(
                self.reactor,
                logins,
                None,
                self.config.max_append,
                implicit_tls=True,
                session_ended=router.release,
            )
        return ServerContext(
            self.reactor,
            logins,
            tls_options,
            self.config.max_append,
            require_tls_for_login=tls_options is not None
            and self.config.requires_tls_for_login(listener),
            session_ended=router.release,
        )

    def startService(self) -> None:
        super().startService()
        defer.ensureDeferred(self.start())

    async def stop(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
            self.notifier = None
        was_listening = bool(self.ports)
        ports, self.ports = self.ports, []
        if self.metrics_port is not None:
            ports.append(self.metrics_port)
            self.metrics_port = None
        if self._collector is not None:
            METRICS.remove_collector(self._collector)
            self._collector = None
        for port in ports:
            await port.stopListening()
        if self.router is not None:
            await self.router.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        if was_listening:
            log.info("imapproxy stopped")

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self.stop())


def _kind(listener: Listener, config: Config) -> str:
    if listener.implicit_tls:
        return "implicit TLS"
    if config.server_tls is None:
        return "plain"
    return "STARTTLS required" if config.requires_tls_for_login(listener) else "STARTTLS offered"


def _describe_upstream(upstream: UpstreamConfig, count: int) -> str:
    if count == 1:
        return upstream.address.url()
    takes = [*upstream.logins, *(f"on {a}" for a in upstream.listeners)] or ["any other login"]
    return f"{upstream.name} {upstream.address.url()} ({', '.join(takes)})"
