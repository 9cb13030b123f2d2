"""Certificates made wrong on purpose (and right), for the upstream TLS tests.

Built with the ``cryptography`` package: a root CA, an intermediate, and server
certificates whose names, validity and issuer each tests can choose. EC P-256 keys,
so making a dozen takes milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.tlscert import CertPair

_NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issuer:
    """A CA that can sign: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: tuple[int, int]
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW + dt.timedelta(days=days[0]))
        .not_valid_after(_NOW + dt.timedelta(days=days[1]))
    )


def make_ca(common_name: str = "imapproxy test root", parent: Issuer | None = None) -> Issuer:
    """A root CA, or an intermediate signed by parent."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = _name(common_name) if parent is None else parent.cert.subject
    signing_key = key if parent is None else parent.key
    cert = (
        _builder(common_name, issuer_name, key.public_key(), (-1, 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(signing_key, hashes.SHA256())
    )
    return Issuer(cert, key)


def make_server_cert(
    directory: Path,
    name: str,
    *,
    issuer: Issuer | None,
    dns: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
    san: bool = True,
    days: tuple[int, int] = (-1, 30),
    chain: tuple[Issuer, ...] = (),
) -> CertPair:
    """A server certificate for CN=localhost written as NAME.pem/NAME.key.

    issuer None makes it self-signed. san False leaves out subjectAltName entirely
    (the name is then only in the CN, which must not be trusted). chain is appended
    to the PEM file (intermediates, as a server sends them).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = _name("localhost") if issuer is None else issuer.cert.subject
    builder = _builder("localhost", issuer_name, key.public_key(), days).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    )
    if san:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key if issuer is None else issuer.key, hashes.SHA256())
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    pem = cert.public_bytes(serialization.Encoding.PEM) + b"".join(c.pem() for c in chain)
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.chmod(0o644)
    key_path.chmod(0o600)
    return CertPair(cert=cert_path, key=key_path)


def write_ca(directory: Path, name: str, *issuers: Issuer) -> Path:
    """A CA file holding issuers' certificates, for --upstream-ca."""
    path = directory / f"{name}.pem"
    path.write_bytes(b"".join(i.pem() for i in issuers))
    return path
