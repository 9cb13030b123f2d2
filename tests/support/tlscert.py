"""Self-signed certificates for TLS tests, made with the openssl command line tool.

The openssl CLI is used (rather than a Python crypto library) because it is already a
dependency of Dovecot's Debian package and keeps the test requirements small.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its unencrypted private key."""

    cert: Path
    key: Path


def make_self_signed(directory: Path, name: str = "server", days: int = 30) -> CertPair:
    """Create ``NAME.pem``/``NAME.key`` in ``directory`` valid for localhost and 127.0.0.1.

    Both SAN entries are present so that clients verifying either by hostname or by IP
    address accept the cert; the cert is its own CA, so tests pass it as the CA file.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "openssl is not installed: run ./scripts/test (it installs it) "
            "or `apt-get install openssl`"
        )
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
        check=True,
        capture_output=True,
    )
    cert.chmod(0o644)
    # Dovecot reads the key as root before dropping privileges; 0600 keeps it private.
    key.chmod(0o600)
    return CertPair(cert=cert, key=key)
