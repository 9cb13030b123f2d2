"""Logging in to the upstream with a bearer token: AUTHENTICATE XOAUTH2 / OAUTHBEARER.

The token goes in the command itself when the upstream offers SASL-IR (RFC 4959),
else after its first ``+``. A refusal comes as a challenge holding a JSON error
(RFC 7628 §3.2.2); we answer it with the mechanism's dummy response and keep the
JSON, so the client can be told what the upstream said (its ``scope``, say). A
second challenge after that is not in the protocol: we cancel with ``*``.
"""

from __future__ import annotations

import base64

from imapproxy import sasl
from imapproxy.protocol import ContinuationRequest
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.connection import Result, UpstreamProtocol
from imapproxy.upstream.errors import AuthenticationFailed, UpstreamRefused


class BearerRefused(AuthenticationFailed):
    """The upstream refused the token; ``error_json`` is its JSON error, if it sent one."""

    def __init__(self, status: str, code: object, text: str, error_json: bytes | None) -> None:
        super().__init__(status, code, text)  # type: ignore[arg-type]
        self.error_json = error_json


async def bearer_login(
    protocol: UpstreamProtocol,
    capabilities: set[str],
    address: UpstreamAddress,
    login: sasl.BearerLogin,
) -> Result:
    mechanism = login.mechanism
    if f"AUTH={mechanism}" not in capabilities:
        raise AuthenticationFailed("NO", None, f"the upstream does not offer {mechanism}")
    response = base64.b64encode(sasl.client_response(login, address.host, address.port))
    initial = "SASL-IR" in capabilities
    sent_response = initial
    error_json: list[bytes] = []

    def answer(challenge: ContinuationRequest) -> None:
        nonlocal sent_response
        if not sent_response:
            sent_response = True
            protocol.write(response + b"\r\n")
        elif not error_json:
            error_json.append(_decoded(challenge.text))
            protocol.write(base64.b64encode(sasl.DUMMY_RESPONSE[mechanism]) + b"\r\n")
        else:
            protocol.write(b"*\r\n")

    head = f"AUTHENTICATE {mechanism}".encode()
    try:
        return await protocol.run(
            lambda tag: [
                [tag.encode() + b" " + head + (b" " + response if initial else b"") + b"\r\n"]
            ],
            answer,
        )
    except UpstreamRefused as exc:
        raise BearerRefused(exc.status, exc.code, exc.text, next(iter(error_json), None)) from None


def _decoded(text: bytes) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        return b""
