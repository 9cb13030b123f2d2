"""Verified TLS to the upstream, failing closed.

The proxy sends the user's password over this connection, so the certificate check
is ours to guarantee rather than a library default's: the chain is verified against
the system's CAs (plus one configured CA file), and the leaf must name the host of
the upstream URL in its subjectAltName (DNS or IP; a certificate without one is
refused). Both checks run inside OpenSSL's verify callback, so a failure aborts the
handshake before a byte of application data moves, and the callback turns *every*
exception into "refuse": an unexpected error is a reason to stop, never to go on.

(Twisted's own ``optionsForClientTLS`` turns only ``VerificationError`` into a failed
handshake and logs anything else — such as service_identity's ``CertificateError`` for
a certificate without subjectAltName — and then accepts the connection. We do not use
it.)
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

log = logging.getLogger(__name__)

#: OpenSSL verify error numbers (X509_V_ERR_*) a user is likely to meet, in words.
_CHAIN_ERRORS = {
    2: "its issuer's certificate is not available",
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed and not trusted",
    19: "its chain ends in a self-signed certificate that is not trusted",
    20: "it is not signed by a trusted CA",
    21: "it is the only certificate sent and not signed by a trusted CA",
    24: "an intermediate in its chain is not a CA",
    26: "it is not meant for a TLS server",
}


class CertificateRefused(Exception):
    """The upstream's certificate failed a check; the message says why in one sentence."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_certificate_names(cert: crypto.X509 | None, host: str) -> None:
    """Raise CertificateRefused unless cert names host in its subjectAltName.

    Any failure, of any type, is a refusal: this is the check that keeps a password
    from going to the wrong server.
    """
    if cert is None:
        raise CertificateRefused(f"the upstream {host} sent no certificate")
    try:
        leaf = cert.to_cryptography()
        if _is_ip(host):
            verify_certificate_ip_address(leaf, host)
        else:
            verify_certificate_hostname(leaf, host)
    except CertificateError as exc:
        raise CertificateRefused(
            f"the upstream's certificate has no usable subjectAltName ({exc}), "
            f"so it cannot be checked against {host}"
        ) from None
    except VerificationError:
        raise CertificateRefused(
            f"the upstream's certificate is not valid for {host} (its subjectAltName names "
            "other hosts)"
        ) from None
    except Exception as exc:
        raise CertificateRefused(
            f"the upstream's certificate for {host} could not be checked ({type(exc).__name__})"
        ) from None


@implementer(IOpenSSLClientConnectionCreator)
class VerifiedClientTLS:
    """Client TLS for one upstream host; remembers why it refused, for the error message.

    One instance per connection attempt: ``refusal`` and ``leaf_checked`` describe the
    handshake of that attempt.
    """

    def __init__(self, host: str, ca_file: Path | None) -> None:
        self.host = host
        self.ca_file = ca_file
        #: Why the certificate was refused, once it was.
        self.refusal: str | None = None
        #: Set only when the leaf certificate passed both the chain and the name check.
        self.leaf_checked = False
        self._context = self._make_context()

    def _make_context(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.set_default_verify_paths()
        if self.ca_file is not None:
            context.load_verify_locations(str(self.ca_file))
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if not _is_ip(self.host):
            connection.set_tlsext_host_name(self.host.encode("idna"))
        return connection

    def _verify(
        self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        """OpenSSL calls this for every certificate of the chain, root first, leaf last.

        Returning False aborts the handshake. Nothing here may raise: pyOpenSSL would
        turn an exception into a failed handshake too, but we say so explicitly.
        """
        try:
            if not ok:
                what = _CHAIN_ERRORS.get(errno, f"OpenSSL verify error {errno}")
                where = "the upstream's certificate" if depth == 0 else "a certificate in its chain"
                self._refuse(f"{where} for {self.host} was refused: {what}")
                return False
            if depth == 0:
                check_certificate_names(cert, self.host)
                self.leaf_checked = True
            return True
        except CertificateRefused as exc:
            self._refuse(str(exc))
        except BaseException as exc:
            self._refuse(f"checking the certificate of {self.host} failed ({type(exc).__name__})")
        return False

    def _refuse(self, reason: str) -> None:
        self.leaf_checked = False
        if self.refusal is None:
            self.refusal = reason
            log.warning("upstream TLS refused: %s", reason)


def client_tls_options(host: str, ca_file: Path | None) -> VerifiedClientTLS:
    """Fresh options for one connection attempt to host."""
    return VerifiedClientTLS(host, ca_file)


def check_ca_file(ca_file: Path) -> None:
    """Fail at startup, not at first login, when the CA file is unreadable or not PEM."""
    data = ca_file.read_bytes()
    ssl.Certificate.loadPEM(data)
