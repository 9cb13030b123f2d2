"""AUTHENTICATE XOAUTH2 / OAUTHBEARER from the client's side: with and without SASL-IR,
the RFC 7628 error challenge before NO, refusals of bad framing, and what is
advertised before login."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy.registry import LoginFailed
from imapproxy.server.connection import ClientConnection
from imapproxy.server.session import ServerContext, State
from imapproxy.store.verifier import ScryptParams
from tests.unit.server import test_connection
from tests.unit.server.test_connection import ProxyWithUpstream, ScriptedUpstream

XO = b"user=alice@example.org\x01auth=Bearer good\x01\x01"
OB = b"n,a=alice@example.org,\x01host=127.0.0.1\x01port=1143\x01auth=Bearer good\x01\x01"
ERROR = b'{"status":"invalid_token","schemes":"bearer","scope":"mail"}'


class TokenRegistry:
    """Accepts the token ``good`` for alice; remembers what it was asked."""

    def __init__(self, mechanisms: frozenset[str] = frozenset(), error: Any = None) -> None:
        self.mechanisms = mechanisms
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def login(self, username: bytes, password: bytes, **attempt: Any) -> Any:
        self.calls.append({"username": username, "password": password, **attempt})
        if self.error is not None:
            raise self.error
        if username == b"alice@example.org" and password == b"good":
            return SimpleNamespace(
                account=None, link=SimpleNamespace(upstream_capabilities=frozenset())
            )
        raise LoginFailed(ERROR if password == b"upstream-says" else None)

    def advertised_mechanisms(self) -> frozenset[str]:
        return self.mechanisms

    def release(self, runtime: Any) -> None:
        pass


def client(registry: Any) -> tuple[ClientConnection, StringTransport, Any]:
    clock = MemoryReactorClock()
    connection = ClientConnection(ServerContext(clock, registry, session_ended=lambda r: None))
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport, clock


def send(parts: tuple[ClientConnection, StringTransport, Any], data: bytes) -> list[bytes]:
    connection, transport, clock = parts
    transport.clear()
    connection.dataReceived(data)
    for _ in range(20):
        clock.advance(0)
    return transport.value().split(b"\r\n")[:-1]


def state(parts: Any) -> State:
    return parts[0].session.state  # type: ignore[no-any-return]


@pytest.mark.parametrize(("mechanism", "message"), [("XOAUTH2", XO), ("OAUTHBEARER", OB)])
def test_with_an_initial_response(mechanism: str, message: bytes) -> None:
    registry = TokenRegistry()
    parts = client(registry)
    reply = send(
        parts, b"a1 AUTHENTICATE %s %s\r\n" % (mechanism.encode(), base64.b64encode(message))
    )
    assert reply[-1].startswith(b"a1 OK "), reply
    assert state(parts) is State.AUTHENTICATED
    call = registry.calls[0]
    assert (call["username"], call["password"], call["mechanism"]) == (
        b"alice@example.org",
        b"good",
        mechanism,
    )


def test_without_an_initial_response() -> None:
    parts = client(TokenRegistry())
    assert send(parts, b"a1 AUTHENTICATE XOAUTH2\r\n") == [b"+ "]
    reply = send(parts, base64.b64encode(XO) + b"\r\n")
    assert reply[-1].startswith(b"a1 OK "), reply


@pytest.mark.parametrize(
    ("token", "status"), [(b"bad", "invalid_token"), (b"upstream-says", "invalid_token")]
)
@pytest.mark.parametrize(("mechanism", "dummy"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")])
def test_a_refused_token_gets_the_error_challenge_then_no(
    mechanism: str, dummy: bytes, token: bytes, status: str
) -> None:
    parts = client(TokenRegistry())
    message = (XO if mechanism == "XOAUTH2" else OB).replace(b"good", token)
    reply = send(
        parts, b"a1 AUTHENTICATE %s %s\r\n" % (mechanism.encode(), base64.b64encode(message))
    )
    assert len(reply) == 1 and reply[0].startswith(b"+ "), reply
    error = json.loads(base64.b64decode(reply[0][2:]))
    assert error["status"] == status
    if token == b"upstream-says":
        assert error["scope"] == "mail"  # the upstream's own error, passed on
    reply = send(parts, dummy + b"\r\n")
    assert reply[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]"), reply
    assert state(parts) is State.NOT_AUTHENTICATED


def test_cancelling_at_the_error_challenge_is_bad() -> None:
    parts = client(TokenRegistry())
    send(parts, b"a1 AUTHENTICATE XOAUTH2 %s\r\n" % base64.b64encode(XO.replace(b"good", b"x")))
    assert send(parts, b"*\r\n")[-1].startswith(b"a1 BAD ")
    assert state(parts) is State.NOT_AUTHENTICATED


BAD = {
    "garbage base64": b"a1 AUTHENTICATE XOAUTH2 !!!notbase64\r\n",
    "padding": b"a1 AUTHENTICATE XOAUTH2 YWJj=\r\n",
    "wrong framing": b"a1 AUTHENTICATE XOAUTH2 "
    + base64.b64encode(b"user=a auth=Bearer t")
    + b"\r\n",
    "PLAIN framing": b"a1 AUTHENTICATE OAUTHBEARER " + base64.b64encode(b"\0alice\0good") + b"\r\n",
    "no user in OAUTHBEARER": b"a1 AUTHENTICATE OAUTHBEARER "
    + base64.b64encode(b"n,,\x01auth=Bearer good\x01\x01")
    + b"\r\n",
    "empty": b"a1 AUTHENTICATE XOAUTH2 =\r\n",
    "cancelled": b"a1 AUTHENTICATE OAUTHBEARER *\r\n",
}


@pytest.mark.parametrize("line", BAD.values(), ids=BAD.keys())
def test_a_malformed_response_is_bad_and_no_one_is_asked(line: bytes) -> None:
    registry = TokenRegistry()
    parts = client(registry)
    reply = send(parts, line)
    assert reply[-1].startswith(b"a1 BAD "), reply
    assert b"good" not in b"".join(reply)
    assert registry.calls == []
    assert state(parts) is State.NOT_AUTHENTICATED


@pytest.mark.parametrize("error", [KeyError("k"), MemoryError(), RuntimeError("r")])
def test_any_exception_in_the_check_is_no(error: BaseException) -> None:
    parts = client(TokenRegistry(error=error))
    reply = send(parts, b"a1 AUTHENTICATE XOAUTH2 %s\r\n" % base64.b64encode(XO))
    assert reply[-1].startswith(b"a1 NO "), reply
    assert state(parts) is State.NOT_AUTHENTICATED


def capabilities(parts: Any) -> list[bytes]:
    reply = send(parts, b"c1 CAPABILITY\r\n")
    return reply[0].split(b" ")


def test_advertised_only_what_the_registry_says_the_upstreams_offer() -> None:
    assert b"AUTH=XOAUTH2" not in capabilities(client(TokenRegistry()))
    caps = capabilities(client(TokenRegistry(frozenset({"XOAUTH2"}))))
    assert b"AUTH=XOAUTH2" in caps and b"AUTH=OAUTHBEARER" not in caps
    both = capabilities(client(TokenRegistry(frozenset({"XOAUTH2", "OAUTHBEARER"}))))
    assert b"AUTH=XOAUTH2" in both and b"AUTH=OAUTHBEARER" in both


def test_a_registry_that_cannot_say_advertises_none() -> None:
    registry = TokenRegistry()
    registry.advertised_mechanisms = lambda: 1 / 0  # type: ignore[assignment,method-assign]
    caps = capabilities(client(registry))
    assert b"AUTH=PLAIN" in caps and not any(c.startswith(b"AUTH=X") for c in caps)


def test_not_advertised_after_login() -> None:
    parts = client(TokenRegistry(frozenset({"XOAUTH2"})))
    send(parts, b"a1 AUTHENTICATE XOAUTH2 %s\r\n" % base64.b64encode(XO))
    assert b"AUTH=XOAUTH2" not in capabilities(parts)


class TokenUpstream(ScriptedUpstream):
    """The scripted upstream with XOAUTH2 (SASL-IR only) and its error challenge."""

    def connectionMade(self) -> None:
        self.transport.write(
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] hi\r\n"
        )
        self.failing: bytes | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if self.failing is not None:  # the dummy response
                self.transport.write(self.failing + b" NO [AUTHENTICATIONFAILED] nope\r\n")
                self.failing = None
                continue
            tag, _, rest = line.partition(b" ")
            words = rest.split(b" ")
            if words[0].upper() == b"AUTHENTICATE":
                if b"auth=Bearer " + self.password + b"\x01" in base64.b64decode(words[2]):
                    self.transport.write(tag + b" OK [CAPABILITY IMAP4rev1] logged in\r\n")
                else:
                    self.failing = tag
                    self.transport.write(b"+ " + base64.b64encode(ERROR) + b"\r\n")
            else:
                super().dataReceived(line + b"\r\n")


def test_tokens_are_not_in_the_log_or_the_state_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(test_connection, "ScriptedUpstream", TokenUpstream)
    right, wrong = b"ya29.right-token-s3cret", b"ya29.wrong-token-s3cret"
    proxy = ProxyWithUpstream(tmp_path, right)
    proxy.registry.verifier_params = ScryptParams(2**10, 8, 1)
    bad = base64.b64encode(b"user=alice\x01auth=Bearer " + wrong + b"\x01\x01")
    proxy.transport.clear()
    proxy.connection.dataReceived(b"a1 AUTHENTICATE XOAUTH2 " + bad + b"\r\n")
    for _ in range(200):
        proxy._connect_pending()
        for pump in proxy.pumps:
            pump.pump()
        proxy.clock.advance(0.01)
    assert proxy.transport.value().startswith(b"+ "), proxy.transport.value()
    assert proxy.send(b"\r\n", b"a1").startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    good = base64.b64encode(b"n,a=alice,\x01auth=Bearer " + right + b"\x01\x01")
    assert proxy.send(b"a2 AUTHENTICATE OAUTHBEARER " + good + b"\r\n", b"a2").startswith(b"a2 OK")
    # The tokens did travel (so the search below is not vacuous): to the upstream.
    sent = [
        base64.b64decode(line.split(b" ")[3])
        for u in proxy.upstreams
        for line in u.received.split(b"\r\n")
        if b" AUTHENTICATE " in line
    ]
    assert any(wrong in m for m in sent) and any(right in m for m in sent), sent
    proxy.send(b"a3 LOGOUT\r\n", b"a3")
    proxy.store.close()

    log = "\n".join([record.getMessage() for record in caplog.records] + [caplog.text]).encode()
    assert b"alice" in log, "the log was not captured: the search below would prove nothing"
    files = [path for path in proxy.state_dir.rglob("*") if path.is_file()]
    assert files
    for secret in (right, wrong):
        for form in (secret, base64.b64encode(secret), secret.hex().encode()):
            assert form not in log, f"the log contains a token ({form!r})"
            for path in files:
                assert form not in path.read_bytes(), f"{path} contains a token ({form!r})"
