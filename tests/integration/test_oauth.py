"""OAuth2 logins through the real proxy against Dovecot's own OAuth2 support.

Dovecot here checks XOAUTH2 / OAUTHBEARER tokens at a token introspection endpoint the
test runs (tests/support/oauth_server.py); passwords still work for seeding. One such
Dovecot and one proxy (``--oauth``, its link through a relay) serve the module; each
test has its own user and token, and leaves the link restored.
"""

from __future__ import annotations

import base64
import imaplib
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.clients import TIMEOUT, imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.oauth_server import IntrospectionServer
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay


@pytest.fixture(scope="module")
def introspection() -> Iterator[IntrospectionServer]:
    with IntrospectionServer() as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(introspection: IntrospectionServer) -> Iterator[Dovecot]:
    directory = Path(tempfile.mkdtemp(prefix="imapproxy-oauth-dovecot-"))
    with Dovecot(directory, oauth2_introspection=introspection.url) as dovecot:
        yield dovecot


@pytest.fixture(scope="module")
def oauth_proxy(
    oauth_dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    with Relay(oauth_dovecot.host, oauth_dovecot.port) as relay:
        proxy = ProxyProcess(
            f"imap+plain://{relay.host}:{relay.port}",
            tmp_path_factory.mktemp("oauth") / "state",
            extra_args=("--oauth", "--login-delay", "0"),
        )
        proxy.relay = relay
        with proxy:
            yield proxy


class User:
    """A Dovecot user with one message in INBOX and a token the endpoint vouches for."""

    def __init__(self, dovecot: Dovecot, introspection: IntrospectionServer) -> None:
        self.name = f"oauth-{uuid.uuid4().hex[:10]}"
        self.token = f"tok-{uuid.uuid4().hex}"
        self.subject = f"for {self.name}"
        dovecot.add_user(self.name, uuid.uuid4().hex)  # for seeding only
        with imap(
            dovecot.host, dovecot.port, Account(self.name, dovecot.users[self.name], {})
        ) as c:
            c.append(
                "INBOX",
                f"Subject: {self.subject}\r\nMessage-ID: <{self.token}@t>\r\n\r\nhi\r\n".encode(),
            )
        introspection.tokens[self.token] = self.name


@pytest.fixture
def user(oauth_dovecot: Dovecot, introspection: IntrospectionServer) -> User:
    return User(oauth_dovecot, introspection)


@pytest.fixture
def offline(oauth_proxy: ProxyProcess) -> Iterator[Relay]:
    """The proxy's link, to cut; restored after the test."""
    relay = oauth_proxy.relay
    assert relay is not None
    try:
        yield relay
    finally:
        relay.resume()


def xoauth2(user: str, token: str) -> Callable[[bytes], bytes]:
    """imaplib's authobject: the response, then the dummy answer to an error challenge."""
    challenges: list[bytes] = []

    def respond(challenge: bytes) -> bytes:
        challenges.append(challenge)
        if len(challenges) == 1:
            return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        return b""

    respond.challenges = challenges  # type: ignore[attr-defined]
    return respond


def subjects(client: imaplib.IMAP4) -> list[bytes]:
    assert client.select("INBOX", readonly=True)[0] == "OK"
    typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    return [part[1].strip() for part in data if isinstance(part, tuple)]


def token_login(proxy: ProxyProcess, user: str, token: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        client.authenticate("XOAUTH2", xoauth2(user, token))
    except BaseException:
        client.shutdown()
        raise
    return client


def refused(proxy: ProxyProcess, user: str, token: str) -> list[bytes]:
    """The challenges seen before a refused XOAUTH2 login (which must be refused)."""
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
    respond = xoauth2(user, token)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("XOAUTH2", respond)
    finally:
        client.shutdown()
    return respond.challenges[1:]  # type: ignore[attr-defined,no-any-return]


def test_both_mechanisms_are_advertised_before_login(oauth_proxy: ProxyProcess) -> None:
    deadline = time.monotonic() + 10
    while True:  # the proxy asks the upstream at startup, in the background
        client = imaplib.IMAP4(oauth_proxy.host, oauth_proxy.port, timeout=TIMEOUT)
        caps = set(client.capabilities)
        client.logout()
        if "AUTH=XOAUTH2" in caps or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "AUTH=PLAIN"} <= caps


def test_a_token_login_online_then_offline_then_a_local_password(
    oauth_proxy: ProxyProcess,
    oauth_dovecot: Dovecot,
    user: User,
    offline: Relay,
    introspection: IntrospectionServer,
) -> None:
    client = token_login(oauth_proxy, user.name, user.token)
    assert subjects(client) == [f"Subject: {user.subject}".encode()]
    client.logout()
    other = User(oauth_dovecot, introspection)
    token_login(oauth_proxy, other.name, other.token).logout()

    offline.cut()
    asked = introspection.requests
    client = token_login(oauth_proxy, user.name, user.token)  # the same token, offline
    assert subjects(client) == [f"Subject: {user.subject}".encode()]
    client.logout()
    # Refusals offline: an unknown token, another user's token, garbage. Each gets the
    # RFC 7628 error challenge (JSON) before NO.
    (challenge,) = refused(oauth_proxy, user.name, "tok-never-seen")
    assert json.loads(challenge)["status"] == "invalid_token"
    refused(oauth_proxy, other.name, user.token)  # the user and the token don't match
    refused(oauth_proxy, user.name, other.token)
    assert introspection.requests == asked, "an offline login reached the upstream"
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imaplib.IMAP4(oauth_proxy.host, oauth_proxy.port, timeout=TIMEOUT).login(
            user.name, "local-password-1"
        )

    # A local password, set with `imapproxy passwd`, logs in offline.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imapproxy",
            "passwd",
            user.name,
            "--upstream",
            oauth_proxy.upstream_url,
            "--state-dir",
            str(oauth_proxy.state_dir),
            "--stdin",
        ],
        input="local-password-1\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "local-password-1" not in result.stdout + result.stderr
    client = imaplib.IMAP4(oauth_proxy.host, oauth_proxy.port, timeout=TIMEOUT)
    client.login(user.name, "local-password-1")
    assert subjects(client) == [f"Subject: {user.subject}".encode()]
    client.logout()


def test_online_the_upstream_decides(
    oauth_proxy: ProxyProcess, user: User, introspection: IntrospectionServer
) -> None:
    (challenge,) = refused(oauth_proxy, user.name, "tok-unknown-upstream")
    assert json.loads(challenge)["status"] == "401"  # Dovecot's own error, passed on
    refused(oauth_proxy, "someone-else", user.token)  # a token for another user
    client = token_login(oauth_proxy, user.name, user.token)
    client.logout()


def _raw(proxy: ProxyProcess, lines: list[bytes]) -> list[bytes]:
    """Send each line after the previous answer; return every line received."""
    with socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        got = [reader.readline()]
        for line in lines:
            sock.sendall(line + b"\r\n")
            while True:
                got.append(reader.readline())
                if got[-1].startswith((b"+", b"a1 ")) or not got[-1]:
                    break
        return got


def test_oauthbearer_with_an_initial_response_and_its_error_exchange(
    oauth_proxy: ProxyProcess, user: User
) -> None:
    def message(token: str) -> bytes:
        gs2 = f"n,a={user.name},\x01host=127.0.0.1\x01port={oauth_proxy.port}\x01"
        return base64.b64encode(f"{gs2}auth=Bearer {token}\x01\x01".encode())

    ok = _raw(oauth_proxy, [b"a1 AUTHENTICATE OAUTHBEARER " + message(user.token)])
    assert ok[-1].startswith(b"a1 OK "), ok
    no = _raw(oauth_proxy, [b"a1 AUTHENTICATE OAUTHBEARER " + message("tok-bad"), b"AQ=="])
    assert no[-2].startswith(b"+ ") and json.loads(base64.b64decode(no[-2][2:]))["status"]
    assert no[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]"), no
    bad = _raw(oauth_proxy, [b"a1 AUTHENTICATE OAUTHBEARER bm90IGZyYW1lZA=="])
    assert bad[-1].startswith(b"a1 BAD "), bad
