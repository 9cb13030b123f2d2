"""Wires configuration → store → account registry → listening server.

A twisted.application Service, so the proxy starts and stops as a unit: on stop it
stops accepting, logs out of the upstream connections and closes the store.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from imapproxy.config import Config
from imapproxy.protocol import DEFAULT_MAX_LITERAL
from imapproxy.registry import AccountRegistry
from imapproxy.server.connection import ServerFactory
from imapproxy.server.session import ServerContext
from imapproxy.store import Store
from imapproxy.upstream.tls import check_ca_file

log = logging.getLogger("imapproxy")


class ProxyService(Service):
    def __init__(self, reactor: Any, config: Config) -> None:
        self.reactor = reactor
        self.config = config
        self.store: Store | None = None
        self.registry: AccountRegistry | None = None
        self.port: Any = None

    async def start(self) -> None:
        """Open the store and listen; raises on a port in use or a bad certificate."""
        config = self.config
        if config.upstream_ca is not None:
            check_ca_file(config.upstream_ca)
        self.store = Store(config.state_dir / "replica")
        self.registry = AccountRegistry(
            self.reactor,
            self.store,
            config.upstream,
            config.upstream_ca,
            # Bodies from the upstream may be as large as what clients may APPEND.
            max_message=max(config.max_append, DEFAULT_MAX_LITERAL),
        )
        tls_options = None
        if config.tls_cert is not None and config.tls_key is not None:
            cert = ssl.PrivateCertificate.loadPEM(
                config.tls_cert.read_text() + config.tls_key.read_text()
            )
            tls_options = cert.options()
        context = ServerContext(
            self.reactor,
            self.registry,
            tls_options,
            config.max_append,
            require_tls_for_login=tls_options is not None and config.require_tls_for_login,
        )
        endpoint_type = TCP6ServerEndpoint if ":" in config.listen_host else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, config.listen_port, interface=config.listen_host)
        self.port = await endpoint.listen(ServerFactory(context))
        self.running = True
        address = self.port.getHost()
        log.info(
            "imapproxy ready: listening on %s:%d, upstream %s, state in %s",
            address.host,
            address.port,
            config.upstream.url(),
            config.state_dir,
        )

    def startService(self) -> None:
        super().startService()
        defer.ensureDeferred(self.start())

    async def stop(self) -> None:
        was_listening = self.port is not None
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        if self.registry is not None:
            await self.registry.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        if was_listening:
            log.info("imapproxy stopped")

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self.stop())
