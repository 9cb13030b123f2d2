"""Upstream TLS fails closed: a certificate made wrong on purpose never gets a password.

Each case starts a Dovecot presenting one certificate, then logs a real client in
through the real proxy, over ``imaps://`` and over ``imap://`` with STARTTLS. A bad
certificate must end with ``NO [UNAVAILABLE]`` and a reason, with no login attempt in
Dovecot's log (its log names the user only once a login was tried); a good one must
log in (the positive control that shows the log check can see a login).
"""

from __future__ import annotations

import imaplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.clients import TIMEOUT
from tests.support.dovecot import Dovecot
from tests.support.pki import Issuer, make_ca, make_server_cert, write_ca
from tests.support.proxy import ProxyProcess

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    """One certificate situation: how the server certificate is made, what the proxy trusts
    and which host name it dials."""

    name: str
    accepted: bool
    host: str = "localhost"
    reason: str = ""  # a fragment of the reason the client must hear


CASES = [
    Case("valid", True),
    Case("valid-ip", True, host="127.0.0.1"),
    Case("chain-with-intermediate", True),
    Case("no-subjectaltname", False, reason="subjectAltName"),
    Case("wrong-name", False, reason="not valid for localhost"),
    Case("wrong-ip", False, host="127.0.0.1", reason="not valid for 127.0.0.1"),
    Case("expired", False, reason="expired"),
    Case("not-yet-valid", False, reason="not valid yet"),
    Case("self-signed-untrusted", False, reason="self-signed"),
    Case("untrusted-ca", False, reason="trusted CA"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issuer, Issuer, Path]:
    """The trusted root, an intermediate under it, and the CA file naming only the root."""
    directory = tmp_path_factory.mktemp("pki")
    root = make_ca()
    intermediate = make_ca("imapproxy test intermediate", parent=root)
    return root, intermediate, write_ca(directory, "trusted", root)


def _server_cert(case: Case, directory: Path, root: Issuer, intermediate: Issuer) -> object:
    make = {
        "valid": lambda: make_server_cert(directory, case.name, issuer=root),
        "valid-ip": lambda: make_server_cert(directory, case.name, issuer=root),
        "chain-with-intermediate": lambda: make_server_cert(
            directory, case.name, issuer=intermediate, chain=(intermediate,)
        ),
        "no-subjectaltname": lambda: make_server_cert(directory, case.name, issuer=root, san=False),
        "wrong-name": lambda: make_server_cert(
            directory, case.name, issuer=root, dns=("mail.example.org",), ips=("10.9.9.9",)
        ),
        "wrong-ip": lambda: make_server_cert(
            directory, case.name, issuer=root, dns=("localhost",), ips=("127.0.0.2",)
        ),
        "expired": lambda: make_server_cert(directory, case.name, issuer=root, days=(-30, -1)),
        "not-yet-valid": lambda: make_server_cert(directory, case.name, issuer=root, days=(1, 30)),
        "self-signed-untrusted": lambda: make_server_cert(directory, case.name, issuer=None),
        "untrusted-ca": lambda: make_server_cert(directory, case.name, issuer=make_ca("other CA")),
    }
    return make[case.name]()


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def upstream(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki: tuple[Issuer, Issuer, Path],
) -> Iterator[tuple[Case, Dovecot, Path]]:
    case: Case = request.param
    root, intermediate, ca_file = pki
    directory = tmp_path_factory.mktemp(f"tls-{case.name}")
    cert = _server_cert(case, directory, root, intermediate)
    with Dovecot(cert=cert) as dovecot:  # type: ignore[arg-type]
        yield case, dovecot, ca_file


def _login_through_proxy(
    url: str, ca_file: Path, dovecot: Dovecot, state: Path
) -> tuple[str, str, str, str]:
    """Log a new user in through a proxy for url; returns (user, outcome, proxy log, dovecot log)."""
    user = f"tls-{uuid.uuid4().hex[:8]}"
    password = f"secret-{uuid.uuid4().hex}"
    dovecot.add_user(user, password)
    before = dovecot.paths.log.read_text(errors="replace") if dovecot.paths.log.exists() else ""
    with ProxyProcess(url, state, upstream_ca=ca_file) as proxy:
        client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
        try:
            typ, data = client.login(user, password)
            outcome = f"{typ} {data[0].decode()}"
        except imaplib.IMAP4.error as exc:
            outcome = f"NO {exc}"
            assert client.noop()[0] == "OK"  # the client connection survives
        client.logout()
        assert proxy.running
        log = proxy.log_text()
    after = dovecot.paths.log.read_text(errors="replace")
    assert password not in log
    return user, outcome, log, after[len(before) :]


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_upstream_certificate(
    upstream: tuple[Case, Dovecot, Path], scheme: str, tmp_path: Path
) -> None:
    case, dovecot, ca_file = upstream
    port = dovecot.tls_port if scheme == "imaps" else dovecot.port  # imap:// means STARTTLS
    url = f"{scheme}://{case.host}:{port}"
    user, outcome, proxy_log, dovecot_log = _login_through_proxy(
        url, ca_file, dovecot, tmp_path / "state"
    )
    if case.accepted:
        assert outcome.startswith("OK"), outcome
        assert f"user=<{user}>" in dovecot_log  # the check below can see a login
        return
    assert outcome.startswith("NO") and "[UNAVAILABLE]" in outcome, outcome
    assert case.reason in outcome, outcome
    # Nothing of the user reached the server: no LOGIN, no AUTHENTICATE, not even a name.
    assert user not in dovecot_log, dovecot_log
    # One sentence in the proxy's log, no traceback.
    refusals = [line for line in proxy_log.splitlines() if "upstream TLS refused" in line]
    assert refusals and case.reason in refusals[0], proxy_log
    assert "Traceback" not in proxy_log, proxy_log
