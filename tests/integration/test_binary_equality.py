"""FETCH BINARY (RFC 3516) through the proxy gives Dovecot's bytes, decoded from the cache.

Every message of the standard account's folders (varied MIME shapes: base64 and
quoted-printable parts, nested multiparts, attachments) is fetched with the same BINARY
items directly and through the proxy; each item's value must be byte-equal, and the
command's status the same (an unknown transfer encoding is NO [UNKNOWN-CTE] on both).
"""

from __future__ import annotations

import base64
import re
import socket

import pytest

from tests.support.corpus import Account, imap_name
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

ITEMS = [
    "BINARY.PEEK[1]",
    "BINARY.PEEK[2]",
    "BINARY.PEEK[1.1]",
    "BINARY.PEEK[2.1]",
    "BINARY.PEEK[1]<0.40>",
    "BINARY.PEEK[2]<10.1000>",
    "BINARY.SIZE[1]",
    "BINARY.SIZE[2]",
    # The whole message, its base64 parts made binary (RFC 3516 on a section-binary of []).
    "BINARY.PEEK[]",
    "BINARY.PEEK[]<100.300>",
    "BINARY.SIZE[]",
]
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n$")


class _Bytes:
    """A client that returns the exact bytes of each answer, literals included."""

    def __init__(self, host: str, port: int, account: Account) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.count = 0
        assert self.command(f'LOGIN "{account.user}" "{account.password}"')[1].startswith(b"OK")

    def command(self, text: str) -> tuple[bytes, bytes]:
        self.count += 1
        tag = b"b%d" % self.count
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        out = b""
        while True:
            line = self.file.readline()
            assert line, out
            if line.startswith(tag + b" "):
                return out, line[len(tag) + 1 :]
            out += line
            literal = _LITERAL.search(line)
            if literal is not None:
                out += self.file.read(int(literal.group(1)))

    def close(self) -> None:
        self.sock.close()


def _item(answer: bytes, name: bytes) -> bytes | None:
    """The value of one FETCH item in an answer: literal bytes, number or NIL."""
    found = re.search(rb"[( ]" + re.escape(name) + rb" ", answer)
    if found is None:
        return None
    rest = answer[found.end() :]
    literal = re.match(rb"~?\{(\d+)\}\r\n", rest)
    if literal is not None:
        return rest[literal.end() : literal.end() + int(literal.group(1))]
    quoted = re.match(rb'"((?:[^"\\]|\\.)*)"', rest)
    if quoted is not None:
        return re.sub(rb"\\(.)", rb"\1", quoted.group(1))
    return re.match(rb"[^ )]*", rest).group(0)  # type: ignore[union-attr]


def _response_name(item: str) -> bytes:
    return item.replace(".PEEK", "").split("<")[0].encode() + (
        b"<" + item.split("<")[1].split(".")[0].encode() + b">" if "<" in item else b""
    )


@pytest.mark.parametrize("mailbox", ["INBOX", "Archive/2024"])
def test_binary_fetches_are_byte_equal(
    dovecot: Dovecot, proxy: ProxyProcess, alice: Account, mailbox: str
) -> None:
    answers = []
    for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
        client = _Bytes(host, port, alice)
        try:
            client.command(f'EXAMINE "{imap_name(mailbox)}"')
            seen = {}
            for seq in range(1, len(alice.mailboxes[mailbox]) + 1):
                untagged, tagged = client.command(f"FETCH {seq} ({' '.join(ITEMS)})")
                status = tagged.split()[0]
                for item in ITEMS:
                    value = _item(untagged, _response_name(item)) if status == b"OK" else None
                    seen[(seq, item)] = (status, value)
            answers.append(seen)
        finally:
            client.close()
    direct, through = answers
    assert any(value for _, value in direct.values())
    differ = {key: (direct[key], through[key]) for key in direct if direct[key] != through[key]}
    assert {key: (d[0], t[0], d[1] == t[1]) for key, (d, t) in differ.items()} == {}


def test_binary_is_advertised(proxy: ProxyProcess, alice: Account) -> None:
    client = _Bytes(proxy.host, proxy.port, alice)
    try:
        untagged, _ = client.command("CAPABILITY")
    finally:
        client.close()
    assert b" BINARY" in untagged


def test_binary_of_a_whole_message_decodes_its_base64_parts(
    proxy: ProxyProcess, alice: Account
) -> None:
    """RFC 3516 §4.2: BINARY[] is the message "after performing CTE-related decoding";
    as Dovecot does it, a base64 part says ``Content-Transfer-Encoding: binary``."""
    client = _Bytes(proxy.host, proxy.port, alice)
    try:
        client.command("EXAMINE INBOX")
        converted = 0
        for seq in range(1, len(alice.mailboxes["INBOX"]) + 1):
            untagged, tagged = client.command(
                f"FETCH {seq} (BODY.PEEK[] BINARY.PEEK[] BINARY.SIZE[])"
            )
            assert tagged.startswith(b"OK"), tagged
            body, binary = _item(untagged, b"BODY[]"), _item(untagged, b"BINARY[]")
            assert body is not None and binary is not None
            assert _item(untagged, b"BINARY.SIZE[]") == str(len(binary)).encode()
            if re.search(rb"(?im)^Content-Transfer-Encoding: base64", body):
                assert re.search(rb"(?im)^Content-Transfer-Encoding: base64", binary) is None
                assert re.search(rb"(?im)^Content-Transfer-Encoding: binary\r$", binary)
                assert len(binary) < len(body)
                converted += 1
            else:
                assert binary == body
    finally:
        client.close()
    assert converted > 0


_B64 = base64.encodebytes(bytes(range(256)) * 3).replace(b"\n", b"\r\n")
# Shapes the standard account lacks: a single-part base64 message, an upper-case
# encoding name next to quoted-printable (kept as it is), a folded encoding field
# (UNKNOWN-CTE, for BINARY[] too), a base64 part inside an attached message.
CRAFTED = [
    b"From: a@example.org\r\nSubject: one\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + _B64,
    b"From: a@example.org\r\nSubject: upper\r\nContent-Type: multipart/mixed; boundary=X\r\n"
    b"\r\n--X\r\nContent-Transfer-Encoding: BASE64\r\nContent-Type: image/png\r\n\r\n"
    + _B64
    + b"\r\n--X\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\ncaf=C3=A9 =\r\nsoft\r\n--X--\r\n",
    b"From: a@example.org\r\nSubject: folded\r\nContent-Type: multipart/mixed; boundary=X\r\n"
    b"\r\n--X\r\nContent-Transfer-Encoding:\r\n base64\r\n\r\naGVsbG8=\r\n--X--\r\n",
    b"From: a@example.org\r\nSubject: nested\r\nContent-Type: multipart/mixed; boundary=Y\r\n"
    b"\r\n--Y\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + _B64 + b"\r\n--Z--\r\n\r\n--Y--\r\n",
    b"From: a@example.org\r\nSubject: inner multipart\r\n"
    b"Content-Type: multipart/mixed; boundary=Y\r\n\r\n--Y\r\n"
    b"Content-Type: multipart/alternative; boundary=Z\r\n\r\n--Z\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n--Z\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--Z--\r\n\r\n--Y--\r\n",
]


def test_binary_of_crafted_messages_is_byte_equal(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    direct = _Bytes(dovecot.host, dovecot.port, fresh_user)
    try:
        for message in CRAFTED:
            direct.sock.sendall(b"ap APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
            line = direct.file.readline()
            assert line.startswith(b"ap OK"), line
    finally:
        direct.close()
    items = "BINARY.PEEK[] BINARY.SIZE[] BINARY.PEEK[1] BINARY.PEEK[2]"
    answers = []
    for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
        client = _Bytes(host, port, fresh_user)
        try:
            client.command("EXAMINE INBOX")
            total = len(fresh_user.mailboxes["INBOX"])
            seen = {}
            for seq in range(total + 1, total + len(CRAFTED) + 1):
                untagged, tagged = client.command(f"FETCH {seq} ({items})")
                names = (b"BINARY[]", b"BINARY.SIZE[]", b"BINARY[1]", b"BINARY[2]")
                seen[seq] = (tagged.split()[0], [_item(untagged, name) for name in names])
            answers.append(seen)
        finally:
            client.close()
    assert [s for s, _ in answers[0].values()] == [b"OK", b"OK", b"NO", b"OK", b"OK"]
    assert answers[1] == answers[0]
