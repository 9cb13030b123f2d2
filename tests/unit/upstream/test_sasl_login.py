"""AUTHENTICATE XOAUTH2 / OAUTHBEARER to a scripted upstream: with and without SASL-IR,
the RFC 7628 error challenge answered with the dummy response, and refusals."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from imapproxy.sasl import OAUTHBEARER, XOAUTH2, BearerLogin
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import offered_mechanisms
from imapproxy.upstream.connection import UpstreamProtocol
from imapproxy.upstream.errors import AuthenticationFailed
from imapproxy.upstream.sasl_login import BearerRefused, bearer_login

ADDRESS = UpstreamAddress.parse("imaps://imap.example.org:993")
ERROR = b'{"status":"invalid_token","schemes":"bearer","scope":"mail"}'


def start(mechanism: str, capabilities: set[str]) -> tuple[Any, StringTransport, UpstreamProtocol]:
    protocol = UpstreamProtocol(Clock(), command_timeout=5.0)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"* OK ready\r\n")
    login = BearerLogin(mechanism, b"alice@example.org", b"tok")
    d = defer.ensureDeferred(bearer_login(protocol, capabilities, ADDRESS, login))
    return d, transport, protocol


def sent(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


def outcome(d: Any) -> Any:
    assert d.called
    result: list[Any] = []
    d.addBoth(result.append)
    return result[0].value if isinstance(result[0], Failure) else result[0]


@pytest.mark.parametrize("mechanism", [XOAUTH2, OAUTHBEARER])
def test_with_sasl_ir_the_token_goes_in_the_command(mechanism: str) -> None:
    d, transport, protocol = start(mechanism, {f"AUTH={mechanism}", "SASL-IR"})
    tag, command, name, b64 = sent(transport).rstrip(b"\r\n").split(b" ")
    assert (tag, command, name) == (b"P1", b"AUTHENTICATE", mechanism.encode())
    decoded = base64.b64decode(b64)
    assert b"auth=Bearer tok\x01\x01" in decoded
    if mechanism == OAUTHBEARER:
        assert decoded.startswith(b"n,a=alice@example.org,\x01host=imap.example.org\x01port=993")
    protocol.dataReceived(b"P1 OK logged in\r\n")
    assert outcome(d).text == "logged in"


def test_without_sasl_ir_the_token_follows_the_first_continuation() -> None:
    d, transport, protocol = start(XOAUTH2, {"AUTH=XOAUTH2"})
    assert sent(transport) == b"P1 AUTHENTICATE XOAUTH2\r\n"
    protocol.dataReceived(b"+ \r\n")
    assert base64.b64decode(sent(transport)) == b"user=alice@example.org\x01auth=Bearer tok\x01\x01"
    protocol.dataReceived(b"P1 OK logged in\r\n")
    assert outcome(d).text == "logged in"


@pytest.mark.parametrize(("mechanism", "dummy"), [(XOAUTH2, b""), (OAUTHBEARER, b"\x01")])
def test_an_error_challenge_gets_the_dummy_response_and_its_json_is_kept(
    mechanism: str, dummy: bytes
) -> None:
    d, transport, protocol = start(mechanism, {f"AUTH={mechanism}", "SASL-IR"})
    sent(transport)
    protocol.dataReceived(b"+ " + base64.b64encode(ERROR) + b"\r\n")
    assert sent(transport) == base64.b64encode(dummy) + b"\r\n"
    protocol.dataReceived(b"P1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
    refused = outcome(d)
    assert isinstance(refused, BearerRefused) and refused.error_json == ERROR


def test_a_second_challenge_is_cancelled() -> None:
    d, transport, protocol = start(XOAUTH2, {"AUTH=XOAUTH2", "SASL-IR"})
    sent(transport)
    protocol.dataReceived(b"+ " + base64.b64encode(ERROR) + b"\r\n")
    sent(transport)
    protocol.dataReceived(b"+ more\r\n")
    assert sent(transport) == b"*\r\n"
    protocol.dataReceived(b"P1 BAD cancelled\r\n")
    assert isinstance(outcome(d), BearerRefused)


def test_a_challenge_that_is_not_base64_keeps_no_json() -> None:
    d, transport, protocol = start(XOAUTH2, {"AUTH=XOAUTH2", "SASL-IR"})
    sent(transport)
    protocol.dataReceived(b"+ %%%\r\n")
    protocol.dataReceived(b"P1 NO failed\r\n")
    refused = outcome(d)
    assert isinstance(refused, BearerRefused) and refused.error_json == b""


def test_an_upstream_that_does_not_offer_the_mechanism_hears_nothing() -> None:
    d, transport, _ = start(OAUTHBEARER, {"AUTH=XOAUTH2", "SASL-IR"})
    assert isinstance(outcome(d), AuthenticationFailed)
    assert sent(transport) == b""


def test_offered_mechanisms_come_from_auth_capabilities() -> None:
    caps = {"IMAP4REV1", "AUTH=PLAIN", "AUTH=XOAUTH2", "SASL-IR"}
    assert offered_mechanisms(caps) == {XOAUTH2}
    assert offered_mechanisms({"AUTH=OAUTHBEARER", "AUTH=XOAUTH2"}) == {XOAUTH2, OAUTHBEARER}
