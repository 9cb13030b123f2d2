"""The OAuth 2.0 SASL mechanisms, sans-IO: XOAUTH2 (Google's) and OAUTHBEARER (RFC 7628).

Both carry a login name and a bearer token; the proxy reads them from a client's
AUTHENTICATE and writes them, re-framed, to the upstream (OAUTHBEARER names the host
and port it talks to, so the upstream's go there, not ours). A failure is not a bare
NO in either mechanism: the server first sends a challenge holding a JSON error
(RFC 7628 §3.2.2), the client answers it with a dummy response (``%x01`` for
OAUTHBEARER, an empty line for XOAUTH2), and only then comes the tagged NO.

Everything here is strict, because a login is decided on it: a response that is not
exactly the framing the mechanism defines is refused with ``SaslError`` (whose text
never holds the token), a token is an RFC 6750 ``b64token`` of bounded length, and an
OAUTHBEARER message without a login name (``a=``) is refused, since the proxy must
know whose account it opens before it asks anyone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"
#: The mechanisms this module speaks, in the order they are advertised.
MECHANISMS = (OAUTHBEARER, XOAUTH2)

#: Longest token accepted (Microsoft's JWTs run to a few KB); longer is not a token.
MAX_TOKEN = 16 * 1024
#: Longest JSON error accepted from an upstream; longer is replaced by our own.
MAX_ERROR_JSON = 4096

#: RFC 6750 §2.1 b64token.
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_SEP = b"\x01"

#: What a client answers an error challenge with (RFC 7628 §3.2.3; XOAUTH2: empty).
DUMMY_RESPONSE = {OAUTHBEARER: b"\x01", XOAUTH2: b""}


class SaslError(ValueError):
    """A response we refuse; the message says why and never holds the token."""


@dataclass(frozen=True)
class BearerLogin:
    """A login name and bearer token, as a client sent them."""

    mechanism: str
    username: bytes
    token: bytes = b""

    def __repr__(self) -> str:
        return f"BearerLogin({self.mechanism}, {self.username!r}, token=<redacted>)"


def is_mechanism(name: str) -> bool:
    return name.upper() in MECHANISMS


def decode_base64(line: bytes) -> bytes:
    """A client's base64 response (``=`` is the empty one, RFC 4959); SaslError if it
    is not strict base64."""
    line = line.strip(b"\r\n")
    if line == b"=":
        return b""
    if len(line) % 4:
        raise SaslError("invalid base64")  # b64decode lets stray padding through
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64") from None


def parse_client_response(mechanism: str, message: bytes) -> BearerLogin:
    """The decoded initial response of ``mechanism``; SaslError if it is not one."""
    mechanism = mechanism.upper()
    if mechanism == XOAUTH2:
        return _parse_xoauth2(message)
    if mechanism == OAUTHBEARER:
        return _parse_oauthbearer(message)
    raise SaslError(f"{mechanism} is not an OAuth mechanism")


def _parse_xoauth2(message: bytes) -> BearerLogin:
    # user=NAME ^A auth=Bearer TOKEN ^A ^A
    if not message.endswith(_SEP + _SEP):
        raise SaslError("XOAUTH2 response does not end with two ^A")
    fields = message[:-2].split(_SEP)
    if len(fields) != 2 or not fields[0].startswith(b"user="):
        raise SaslError("XOAUTH2 response is not user=…^Aauth=…")
    username = _username(fields[0][len(b"user=") :])
    if not fields[1].startswith(b"auth="):
        raise SaslError("XOAUTH2 response has no auth=")
    return BearerLogin(XOAUTH2, username, _bearer(fields[1][len(b"auth=") :]))


def _parse_oauthbearer(message: bytes) -> BearerLogin:
    # gs2-header ^A *(key=value ^A) ^A   (RFC 7628 §3.1)
    if not message.endswith(_SEP + _SEP):
        raise SaslError("OAUTHBEARER response does not end with two ^A")
    header, *fields = message[:-2].split(_SEP)
    username = _gs2_authzid(header)
    pairs: dict[bytes, bytes] = {}
    for field in fields:
        key, eq, value = field.partition(b"=")
        if not eq or not re.fullmatch(rb"[A-Za-z]+", key) or key in pairs:
            raise SaslError("OAUTHBEARER response has a malformed or repeated key")
        pairs[key] = value
    if b"auth" not in pairs:
        raise SaslError("OAUTHBEARER response has no auth=")
    return BearerLogin(OAUTHBEARER, username, _bearer(pairs[b"auth"]))


def _gs2_authzid(header: bytes) -> bytes:
    """``n,a=NAME,`` → NAME. Channel binding (``p=``) is refused: the proxy ends TLS,
    so a binding to its channel would mean nothing upstream; ``y`` and ``n`` are fine."""
    parts = header.split(b",")
    if len(parts) != 3 or parts[2] != b"":
        raise SaslError("OAUTHBEARER gs2 header is malformed")
    if parts[0] not in (b"n", b"y"):
        raise SaslError("OAUTHBEARER channel binding is not supported")
    if not parts[1].startswith(b"a="):
        raise SaslError("OAUTHBEARER without a login name (a=) is not supported here")
    raw = parts[1][2:]
    if re.search(rb"=(?!2C|3D)", raw):
        raise SaslError("OAUTHBEARER login name has a bad escape")
    return _username(raw.replace(b"=2C", b",").replace(b"=3D", b"="))


def _username(raw: bytes) -> bytes:
    if not raw or len(raw) > 1024 or any(b < 0x20 or b == 0x7F for b in raw):
        raise SaslError("login name is empty, too long or holds control characters")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("login name is not UTF-8") from None
    return raw


def _bearer(value: bytes) -> bytes:
    scheme, space, token = value.partition(b" ")
    if not space or scheme.lower() != b"bearer":
        raise SaslError("auth is not a Bearer token")
    if len(token) > MAX_TOKEN or not _B64TOKEN.fullmatch(token):
        raise SaslError("bearer token is too long or not a b64token")
    return token


def client_response(login: BearerLogin, host: str, port: int) -> bytes:
    """What we send as the client of ``host:port`` (not base64-encoded yet)."""
    if login.mechanism == XOAUTH2:
        return b"user=" + login.username + _SEP + b"auth=Bearer " + login.token + _SEP + _SEP
    if login.mechanism == OAUTHBEARER:
        name = login.username.replace(b"=", b"=3D").replace(b",", b"=2C")
        return (
            b"n,a=" + name + b"," + _SEP
            + b"host=" + host.encode("idna") + _SEP
            + b"port=" + str(port).encode() + _SEP
            + b"auth=Bearer " + login.token + _SEP + _SEP
        )  # fmt: skip
    raise SaslError(f"{login.mechanism} is not an OAuth mechanism")


def error_challenge(upstream_error: bytes | None = None) -> bytes:
    """The JSON of a failure challenge: the upstream's own when it sent a usable one
    (its ``scope`` tells the client which token to get), else ``invalid_token``."""
    if upstream_error is not None and parse_error(upstream_error) is not None:
        return upstream_error
    return json.dumps({"status": "invalid_token", "schemes": "bearer"}).encode()


def parse_error(data: bytes) -> dict[str, object] | None:
    """A decoded error challenge as a JSON object with a string ``status``, or None."""
    if len(data) > MAX_ERROR_JSON:
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("status"), str):
        return None
    return value


def token_expiry(token: bytes) -> float | None:
    """The ``exp`` claim of a JWT (unverified: it may only shorten how long we keep a
    verifier of it, never lengthen it), or None if the token is not a readable JWT."""
    parts = token.split(b".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
        exp = claims["exp"] if isinstance(claims, dict) else None
    except Exception:
        return None
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not 0 < exp < 2**40:
        return None
    return float(exp)
