"""Verified TLS to the upstream: the system's CAs, plus one extra CA when configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from zope.interface import implementer


@implementer(IOpenSSLTrustRoot)
class _SystemAndExtraCA:
    """Trust the platform's roots and one more CA file (a private or test CA)."""

    def __init__(self, ca_file: Path | None) -> None:
        self.ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        if self.ca_file is not None:
            context.load_verify_locations(str(self.ca_file))


def client_tls_options(host: str, ca_file: Path | None) -> Any:
    """Options that verify the certificate chain and that it names ``host``."""
    return ssl.optionsForClientTLS(host, trustRoot=_SystemAndExtraCA(ca_file))  # type: ignore[arg-type]


def check_ca_file(ca_file: Path) -> None:
    """Fail at startup, not at first login, when the CA file is unreadable or not PEM."""
    data = ca_file.read_bytes()
    ssl.Certificate.loadPEM(data)
