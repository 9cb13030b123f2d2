"""The upstream URL: which server, and how its connection is secured.

Three schemes, each explicit about transport security: ``imaps://`` (TLS from the
first byte), ``imap://`` (STARTTLS, required: a server that does not offer it is an
error, never a silent downgrade) and ``imap+plain://`` (no TLS at all, for tests
and trusted links, and only when asked for by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit


class Security(Enum):
    TLS = "tls"
    STARTTLS = "starttls"
    PLAIN = "plain"


_SCHEMES = {
    "imaps": (Security.TLS, 993),
    "imap": (Security.STARTTLS, 143),
    "imap+plain": (Security.PLAIN, 143),
}


class AddressError(ValueError):
    """An upstream URL we cannot use; the message says why in one line."""


@dataclass(frozen=True)
class UpstreamAddress:
    host: str
    port: int
    security: Security

    @classmethod
    def parse(cls, url: str) -> UpstreamAddress:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise AddressError(
                f"unsupported upstream URL {url!r}: use imaps://host[:993], "
                "imap://host[:143] (STARTTLS) or imap+plain://host[:port]"
            )
        security, default_port = _SCHEMES[parts.scheme]
        if not parts.hostname:
            raise AddressError(f"upstream URL {url!r} has no host")
        if parts.username or parts.password:
            raise AddressError(
                "upstream URL must not carry credentials: clients log in through the proxy"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise AddressError(f"upstream URL {url!r} must be just scheme://host[:port]")
        try:
            port = parts.port or default_port
        except ValueError as exc:
            raise AddressError(f"upstream URL {url!r} has a bad port") from exc
        return cls(parts.hostname, port, security)

    def url(self) -> str:
        scheme = {v[0]: k for k, v in _SCHEMES.items()}[self.security]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"
