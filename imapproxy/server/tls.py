"""The proxy's own certificate, for clients: STARTTLS on ``--listen``, implicit TLS on
``--listen-tls``.

Loaded once, at startup, so that every mistake a user can make with the files (not PEM,
a key that is not the certificate's, an encrypted key, a key other users can read) ends
the start with one line instead of a handshake failure at the first client. The files are
parsed with ``cryptography`` rather than pyOpenSSL's loaders: given an encrypted key,
those ask for a pass phrase on the terminal, which would hang a service.

The key's permissions: a key that every local user can read lets any of them impersonate
the proxy and read its clients' passwords, so it is refused. A key readable by its group
is only warned about, because that is how Debian shares keys (``ssl-cert`` group, 0640).
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl

log = logging.getLogger("imapproxy")

#: Clients older than TLS 1.2 are refused; Twisted's default cipher list is kept.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


class ServerTLSError(Exception):
    """The certificate or key cannot be used; the message is the one line the user sees."""


@dataclass(frozen=True)
class ServerTLS:
    """Checked server TLS settings, shared by the STARTTLS and the implicit-TLS listener."""

    cert_path: Path
    key_path: Path
    options: Any = field(compare=False, repr=False)  # twisted CertificateOptions


def load_server_tls(cert_path: Path, key_path: Path) -> ServerTLS:
    """Read, check and combine ``cert_path`` (PEM, leaf first, then any intermediates) and
    ``key_path`` (PEM, unencrypted). Raises ServerTLSError on any problem, whatever its
    type: a check that fails in an unexpected way refuses too."""
    try:
        _check_key_permissions(key_path)
        chain = _load_chain(cert_path)
        key = _load_key(key_path)
        if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
            raise ServerTLSError(
                f"--tls-key {key_path} is not the private key of the certificate in "
                f"--tls-cert {cert_path}"
            )
        _warn_if_not_valid_now(cert_path, chain[0])
        # pyOpenSSL takes cryptography's objects (its own wrappers are deprecated);
        # Twisted's annotations still name the wrappers.
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=chain[0],  # type: ignore[arg-type]
            extraCertChain=chain[1:],  # type: ignore[arg-type]
            raiseMinimumTo=MINIMUM_TLS_VERSION,
        )
        # Build (and cache) the context every connection will use now, so that what
        # OpenSSL itself refuses (a key too weak for its security level) stops the start
        # instead of failing each handshake.
        options.getContext()
    except ServerTLSError:
        raise
    except Exception as exc:  # fail closed, with the reason in one line
        raise ServerTLSError(
            f"--tls-cert {cert_path} / --tls-key {key_path}: unusable ({_one_line(exc)})"
        ) from None
    return ServerTLS(cert_path, key_path, options)


def _read(label: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerTLSError(f"{label} {path}: {exc.strerror or exc}") from None


def _load_chain(path: Path) -> list[x509.Certificate]:
    data = _read("--tls-cert", path)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ServerTLSError(
            f"--tls-cert {path}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    if not chain:
        raise ServerTLSError(f"--tls-cert {path}: no certificate in the file")
    return chain


def _load_key(path: Path) -> Any:
    data = _read("--tls-key", path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ServerTLSError(
            f"--tls-key {path}: the key is encrypted; give it unencrypted "
            "(e.g. `openssl pkey -in KEY -out PLAIN-KEY`) and keep the file private"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ServerTLSError(
            f"--tls-key {path}: not a PEM private key (expected -----BEGIN PRIVATE KEY-----)"
        ) from None


def _check_key_permissions(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ServerTLSError(f"--tls-key {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ServerTLSError(f"--tls-key {path}: not a regular file")
    if mode & 0o007:
        raise ServerTLSError(
            f"--tls-key {path}: every user on this machine can access it "
            f"(mode {stat.S_IMODE(mode):04o}); refusing it: `chmod 600` it (or 640 for a group)"
        )
    if mode & 0o070:
        log.warning(
            "--tls-key %s is accessible to its group (mode %04o): make sure only trusted "
            "accounts are in that group",
            path,
            stat.S_IMODE(mode),
        )


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _warn_if_not_valid_now(path: Path, cert: x509.Certificate) -> None:
    """An expired certificate still starts the proxy (renewal may be on its way), but
    verifying clients will refuse it: say so now rather than at the first complaint."""
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        log.warning("--tls-cert %s expired on %s", path, cert.not_valid_after_utc.isoformat())
    elif cert.not_valid_before_utc > now:
        log.warning(
            "--tls-cert %s is not valid before %s", path, cert.not_valid_before_utc.isoformat()
        )


def _one_line(exc: BaseException) -> str:
    """OpenSSL errors carry a list of (library, function, reason): the reasons say it."""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and all(isinstance(e, tuple) and len(e) == 3 for e in errors):
        text = "; ".join(str(reason) for _, _, reason in errors)
    else:
        text = " ".join(str(exc).split())
    return text or type(exc).__name__
