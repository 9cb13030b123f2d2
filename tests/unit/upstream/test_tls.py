"""The upstream certificate check fails closed, whatever goes wrong inside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from OpenSSL import crypto

from imapproxy.upstream import tls
from imapproxy.upstream.tls import CertificateRefused, VerifiedClientTLS, check_certificate_names
from tests.support.pki import make_ca, make_server_cert


def _x509(path: Path) -> crypto.X509:
    return crypto.load_certificate(crypto.FILETYPE_PEM, path.read_bytes())


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, crypto.X509]:
    root = make_ca()
    return {
        "good": _x509(make_server_cert(tmp_path, "good", issuer=root).cert),
        "nosan": _x509(make_server_cert(tmp_path, "nosan", issuer=root, san=False).cert),
    }


def test_names_are_checked_against_subjectaltname_only(certs: dict[str, crypto.X509]) -> None:
    check_certificate_names(certs["good"], "localhost")
    check_certificate_names(certs["good"], "127.0.0.1")
    with pytest.raises(CertificateRefused, match="not valid for example.org"):
        check_certificate_names(certs["good"], "example.org")
    with pytest.raises(CertificateRefused, match="not valid for 127.0.0.2"):
        check_certificate_names(certs["good"], "127.0.0.2")
    # CN=localhost is there, but a name only in the CN is not trusted.
    with pytest.raises(CertificateRefused, match="subjectAltName"):
        check_certificate_names(certs["nosan"], "localhost")
    with pytest.raises(CertificateRefused, match="no certificate"):
        check_certificate_names(None, "localhost")


@pytest.mark.parametrize(
    "error", [KeyError("x"), RuntimeError("boom"), MemoryError(), SystemExit()]
)
def test_any_exception_in_the_name_check_refuses(
    certs: dict[str, crypto.X509], monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def broken(*_: object) -> None:
        raise error

    monkeypatch.setattr(tls, "verify_certificate_hostname", broken)
    # Ordinary errors become a refusal; SystemExit and the like go on up: never a return.
    expected = CertificateRefused if isinstance(error, Exception) else type(error)
    with pytest.raises(expected):
        check_certificate_names(certs["good"], "localhost")
    monkeypatch.setattr(tls, "check_certificate_names", broken)
    options = VerifiedClientTLS("localhost", None)
    assert options._verify(None, certs["good"], 0, 0, 1) is False  # type: ignore[arg-type]
    assert options.refusal is not None and not options.leaf_checked


def test_chain_errors_refuse_and_say_why(certs: dict[str, crypto.X509]) -> None:
    options = VerifiedClientTLS("localhost", None)
    assert options._verify(None, certs["good"], 10, 0, 0) is False  # type: ignore[arg-type]
    assert options.refusal is not None and "expired" in options.refusal
    # A later success at depth 0 cannot undo an earlier refusal.
    options._verify(None, certs["good"], 0, 0, 1)  # type: ignore[arg-type]
    assert options.refusal is not None and "expired" in options.refusal


def test_intermediate_depths_do_not_mark_the_leaf_checked(certs: dict[str, crypto.X509]) -> None:
    options = VerifiedClientTLS("localhost", None)
    assert options._verify(None, certs["good"], 0, 1, 1) is True  # type: ignore[arg-type]
    assert not options.leaf_checked
    assert options._verify(None, certs["good"], 0, 0, 1) is True  # type: ignore[arg-type]
    assert options.leaf_checked


def test_a_secured_connection_without_tls_options_is_refused() -> None:
    """A plain connection builds no TLS options (loading the CA bundle costs about
    10 ms); one that must be secured and somehow has none fails, closed."""
    from imapproxy.upstream.client import _required
    from imapproxy.upstream.errors import UpstreamUnreachable

    with pytest.raises(UpstreamUnreachable, match="must be secured"):
        _required(None)
    options = VerifiedClientTLS("localhost", None)
    assert _required(options) is options
