"""The OAuth SASL framing: what a client sends is read strictly, what we send upstream
is read back the same, and every response made wrong on purpose is refused."""

from __future__ import annotations

import base64
import json

import pytest

from imapproxy import sasl
from imapproxy.sasl import OAUTHBEARER, XOAUTH2, BearerLogin, SaslError

TOKEN = b"ya29.a0Af-H_~+/token=="


def xoauth2(user: bytes, token: bytes = TOKEN) -> bytes:
    return b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01"


def oauthbearer(header: bytes, token: bytes = TOKEN, extra: bytes = b"") -> bytes:
    return (
        header
        + b"\x01host=mail.example.org\x01port=993\x01"
        + extra
        + b"auth=Bearer "
        + token
        + b"\x01\x01"
    )


def test_xoauth2_is_read() -> None:
    login = sasl.parse_client_response("xoauth2", xoauth2(b"alice@example.org"))
    assert login == BearerLogin(XOAUTH2, b"alice@example.org", TOKEN)
    assert TOKEN.decode() not in repr(login)


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (b"n,a=alice@example.org,", b"alice@example.org"),
        (b"y,a=al=2Cice=3D,", b"al,ice="),
    ],
)
def test_oauthbearer_is_read_with_its_escapes(header: bytes, user: bytes) -> None:
    login = sasl.parse_client_response(OAUTHBEARER, oauthbearer(header))
    assert login == BearerLogin(OAUTHBEARER, user, TOKEN)


def test_oauthbearer_without_host_and_port_is_fine() -> None:
    message = b"n,a=bob,\x01auth=Bearer abc\x01\x01"
    assert sasl.parse_client_response(OAUTHBEARER, message).token == b"abc"


@pytest.mark.parametrize("mechanism", [XOAUTH2, OAUTHBEARER])
def test_what_we_send_upstream_reads_back(mechanism: str) -> None:
    login = BearerLogin(mechanism, b"a,b=c@example.org", TOKEN)
    message = sasl.client_response(login, "imap.example.org", 993)
    assert sasl.parse_client_response(mechanism, message) == login
    if mechanism == OAUTHBEARER:
        assert b"\x01host=imap.example.org\x01port=993\x01" in message


BAD_XOAUTH2 = {
    "no final ^A^A": b"user=a\x01auth=Bearer t\x01",
    "no user=": b"usr=a\x01auth=Bearer t\x01\x01",
    "no auth=": b"user=a\x01Bearer t\x01\x01",
    "extra field": b"user=a\x01x=y\x01auth=Bearer t\x01\x01",
    "not Bearer": b"user=a\x01auth=Basic dTpw\x01\x01",
    "no space": b"user=a\x01auth=Bearert\x01\x01",
    "empty token": b"user=a\x01auth=Bearer \x01\x01",
    "token with space": b"user=a\x01auth=Bearer t t\x01\x01",
    "token with quote": b'user=a\x01auth=Bearer "t"\x01\x01',
    "token too long": b"user=a\x01auth=Bearer " + b"t" * (sasl.MAX_TOKEN + 1) + b"\x01\x01",
    "empty user": b"user=\x01auth=Bearer t\x01\x01",
    "NUL in user": b"user=a\x00b\x01auth=Bearer t\x01\x01",
    "user not UTF-8": b"user=\xff\x01auth=Bearer t\x01\x01",
    "empty": b"",
}


@pytest.mark.parametrize("message", BAD_XOAUTH2.values(), ids=BAD_XOAUTH2.keys())
def test_bad_xoauth2_is_refused(message: bytes) -> None:
    with pytest.raises(SaslError) as caught:
        sasl.parse_client_response(XOAUTH2, message)
    assert b"t" * 20 not in str(caught.value).encode()


BAD_OAUTHBEARER = {
    "no a=": b"n,,\x01auth=Bearer t\x01\x01",
    "channel binding": b"p=tls-unique,a=x,\x01auth=Bearer t\x01\x01",
    "bad gs2 flag": b"q,a=x,\x01auth=Bearer t\x01\x01",
    "gs2 without final comma": b"n,a=x\x01auth=Bearer t\x01\x01",
    "bad escape": b"n,a=x=41,\x01auth=Bearer t\x01\x01",
    "no auth": b"n,a=x,\x01host=h\x01\x01",
    "repeated key": b"n,a=x,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
    "key with digits": b"n,a=x,\x01h0st=h\x01auth=Bearer t\x01\x01",
    "no final ^A": b"n,a=x,\x01auth=Bearer t\x01",
    "pair without =": b"n,a=x,\x01junk\x01auth=Bearer t\x01\x01",
    "XOAUTH2 framing": b"user=x\x01auth=Bearer t\x01\x01",
    "dummy response": b"\x01",
}


@pytest.mark.parametrize("message", BAD_OAUTHBEARER.values(), ids=BAD_OAUTHBEARER.keys())
def test_bad_oauthbearer_is_refused(message: bytes) -> None:
    with pytest.raises(SaslError):
        sasl.parse_client_response(OAUTHBEARER, message)


@pytest.mark.parametrize("line", [b"not base64!", b"YWJj=", b"YW Jj", b"\xff\xfe", b"YQ"])
def test_garbage_base64_is_refused(line: bytes) -> None:
    with pytest.raises(SaslError):
        sasl.decode_base64(line)


def test_base64_empty_response_and_line_end() -> None:
    assert sasl.decode_base64(b"=") == b""
    assert sasl.decode_base64(base64.b64encode(b"abc") + b"\r\n") == b"abc"


def test_plain_is_not_an_oauth_mechanism() -> None:
    assert not sasl.is_mechanism("PLAIN")
    with pytest.raises(SaslError):
        sasl.parse_client_response("PLAIN", b"\0a\0b")


def test_error_challenge_passes_the_upstreams_json_or_makes_its_own() -> None:
    upstream = b'{"status":"invalid_token","scope":"https://mail.google.com/"}'
    assert sasl.error_challenge(upstream) == upstream
    for bad in (
        None,
        b"",
        b"not json",
        b"[1]",
        b'{"no":"status"}',
        b'{"status":' + b"1" * 5000 + b"}",
    ):
        own = json.loads(sasl.error_challenge(bad))
        assert own["status"] == "invalid_token"


def _jwt(claims: object) -> bytes:
    def part(value: bytes) -> bytes:
        return base64.urlsafe_b64encode(value).rstrip(b"=")

    return part(b'{"alg":"none"}') + b"." + part(json.dumps(claims).encode()) + b".sig"


def test_token_expiry_reads_a_jwt_exp_and_nothing_else() -> None:
    assert sasl.token_expiry(_jwt({"exp": 1_900_000_000})) == 1_900_000_000.0
    for claims in ({}, {"exp": "soon"}, {"exp": True}, {"exp": -1}, {"exp": 1e300}, [1]):
        assert sasl.token_expiry(_jwt(claims)) is None
    assert sasl.token_expiry(b"opaque-token") is None
    assert sasl.token_expiry(b"a.!!!.c") is None
