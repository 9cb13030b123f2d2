"""COMPRESS=DEFLATE towards clients (RFC 4978), with real clients over real sockets.

imaplib is driven through a socket layer that deflates what it sends and inflates what
it reads, as a client on a thin link would; a raw client checks the refusals (before
login, twice, an unknown mechanism) and what happens to invalid compressed input.
"""

from __future__ import annotations

import imaplib
import re
import socket
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.raw import RawClient
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.tlscert import make_self_signed

TIMEOUT = 30
#: A message large enough to take many socket reads and several output batches.
BIG = (
    b"From: big@example.org\r\nTo: you@example.org\r\nSubject: big one\r\n"
    b"Message-ID: <big@test>\r\n\r\n"
    + b"".join(
        b"line %06d of a long and rather repetitive message body\r\n" % n for n in range(40000)
    )
)


# imaplib refuses commands it has no table entry for; COMPRESS is valid once logged in.
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))


class DeflatingIMAP4(imaplib.IMAP4):
    """imaplib with COMPRESS=DEFLATE: after ``compress()`` every byte goes through zlib."""

    deflater: zlib._Compress | None = None
    inflater: zlib._Decompress | None = None
    wire_in = 0
    plain_in = 0

    def compress(self) -> str:
        typ, _data = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
            self.inflater = zlib.decompressobj(-15)
            self._inbuf = b""
        return typ

    def send(self, data: bytes) -> None:
        if self.deflater is None:
            super().send(data)
            return
        self.sock.sendall(self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH))

    def _fill(self) -> None:
        assert self.inflater is not None
        data = self.sock.recv(65536)
        if not data:
            raise imaplib.IMAP4.abort("socket closed")
        self.wire_in += len(data)
        plain = self.inflater.decompress(data)
        self.plain_in += len(plain)
        self._inbuf += plain

    def read(self, size: int) -> bytes:
        if self.inflater is None:
            return super().read(size)
        while len(self._inbuf) < size:
            self._fill()
        out, self._inbuf = self._inbuf[:size], self._inbuf[size:]
        return out

    def readline(self) -> bytes:
        if self.inflater is None:
            return super().readline()
        while b"\n" not in self._inbuf:
            self._fill()
        end = self._inbuf.index(b"\n") + 1
        out, self._inbuf = self._inbuf[:end], self._inbuf[end:]
        return out


class DeflatingIMAP4_SSL(DeflatingIMAP4, imaplib.IMAP4_SSL):
    pass


@pytest.fixture(scope="module")
def user(dovecot: Dovecot) -> tuple[str, str]:
    name = f"zip-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(name, f"{name}-pw")
    with imaplib.IMAP4(dovecot.host, dovecot.port, timeout=TIMEOUT) as client:
        client.login(name, f"{name}-pw")
        client.append("INBOX", None, None, BIG)
        client.append("INBOX", None, None, b"Subject: small\r\n\r\nsmall\r\n")
    return name, f"{name}-pw"


@pytest.fixture(scope="module")
def zproxy(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    base: Path = tmp_path_factory.mktemp("compress")
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        base / "state",
        tls=make_self_signed(base, "proxy"),
        listen_tls=True,
    )
    with proxy:
        yield proxy
    assert "Traceback" not in proxy.log_text(), proxy.log_text()


def _fetch_big(client: DeflatingIMAP4, user: tuple[str, str]) -> bytes:
    client.login(*user)
    assert client.compress() == "OK"
    assert client.select("INBOX")[0] == "OK"
    typ, data = client.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK"
    body = data[0][1]  # type: ignore[index]
    assert isinstance(body, bytes)
    typ, data = client.fetch("2", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == b"Subject: small\r\n\r\nsmall\r\n"  # type: ignore[index]
    client.logout()
    return body


def test_imaplib_fetches_a_big_message_through_deflate(
    zproxy: ProxyProcess, user: tuple[str, str]
) -> None:
    client = DeflatingIMAP4(zproxy.host, zproxy.port, timeout=TIMEOUT)
    assert b"COMPRESS=DEFLATE" not in client.welcome  # offered after login only
    body = _fetch_big(client, user)
    assert body == BIG
    # Repetitive text: the link carries a fraction of what the client reads.
    assert client.wire_in * 5 < client.plain_in, (client.wire_in, client.plain_in)


def test_deflate_under_tls(zproxy: ProxyProcess, user: tuple[str, str]) -> None:
    assert zproxy.tls_port is not None
    context = zproxy.client_ssl_context()
    client = DeflatingIMAP4_SSL(zproxy.host, zproxy.tls_port, ssl_context=context, timeout=TIMEOUT)
    assert _fetch_big(client, user) == BIG


def test_refusals(zproxy: ProxyProcess, user: tuple[str, str]) -> None:
    with RawClient(zproxy.host, zproxy.port) as raw:
        _, status = raw.command("COMPRESS DEFLATE")
        assert status.startswith("BAD"), status  # before login
        raw.ok(f'LOGIN "{user[0]}" "{user[1]}"')
        assert "COMPRESS=DEFLATE" in " ".join(raw.ok("CAPABILITY"))
        _, status = raw.command("COMPRESS GZIP")
        assert status.startswith("BAD"), status
        _, status = raw.command("COMPRESS")
        assert status.startswith("BAD"), status
        assert raw.ok("NOOP") == []  # still uncompressed, still usable
    client = DeflatingIMAP4(zproxy.host, zproxy.port, timeout=TIMEOUT)
    client.login(*user)
    assert client.compress() == "OK"
    with pytest.raises(imaplib.IMAP4.error, match="BAD.*already active"):
        client._simple_command("COMPRESS", "DEFLATE")
    assert client.noop()[0] == "OK"
    client.logout()


def _compressed_session(proxy: ProxyProcess, user: tuple[str, str]) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    file = sock.makefile("rb")
    file.readline()
    sock.sendall(f'a LOGIN "{user[0]}" "{user[1]}"\r\nb COMPRESS DEFLATE\r\n'.encode())
    while not file.readline().startswith(b"b OK"):
        pass
    return sock


def _read_all(sock: socket.socket) -> bytes:
    inflater = zlib.decompressobj(-15)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        out += inflater.decompress(data)
    return out


def test_invalid_compressed_input_ends_the_session_with_bye(
    zproxy: ProxyProcess, user: tuple[str, str]
) -> None:
    sock = _compressed_session(zproxy, user)
    sock.sendall(b"\xff\xfe this is not deflate data at all \x00\x01\x02")
    assert b"* BYE" in _read_all(sock)
    sock.close()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_zip_bomb_is_refused_without_inflating_it_all(
    zproxy: ProxyProcess, user: tuple[str, str]
) -> None:
    """256 MB of one endless line in 260 KB, sent at once (each 64 KB socket read holds
    64 MB): the proxy refuses the line (too long) and goes on, and its memory never
    comes near the inflated size, because it inflates a piece at a time."""
    assert zproxy.pid is not None
    before = _peak_rss_mb(zproxy.pid)
    sock = _compressed_session(zproxy, user)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush the compressor starts afresh: the same megabyte gives the same
    # bytes, so the bomb is one block repeated.
    block = deflater.compress(b"x" * (1 << 20)) + deflater.flush(zlib.Z_FULL_FLUSH)
    tail = deflater.compress(b"\r\nc NOOP\r\n") + deflater.flush(zlib.Z_SYNC_FLUSH)
    sock.sendall(block * 256 + tail)
    inflater = zlib.decompressobj(-15)
    answer = b""
    while b"c OK" not in answer:
        data = sock.recv(65536)
        assert data, answer
        answer += inflater.decompress(data)
    sock.close()
    assert answer.startswith(b"* BAD line too long"), answer[:200]
    assert _peak_rss_mb(zproxy.pid) - before < 40
    with RawClient(zproxy.host, zproxy.port, *user) as raw:
        assert raw.ok("NOOP") == []


def test_idle_and_append_under_deflate(zproxy: ProxyProcess, user: tuple[str, str]) -> None:
    """Commands that wait for more input (IDLE's DONE, a literal's continuation) work
    when that input arrives compressed."""
    sock = _compressed_session(zproxy, user)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflater = zlib.decompressobj(-15)
    received = b""

    def send(data: bytes) -> None:
        sock.sendall(deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))

    def until(marker: bytes) -> bytes:
        nonlocal received
        while marker not in received:
            data = sock.recv(65536)
            assert data, received
            received += inflater.decompress(data)
        before, _, received = received.partition(marker)
        return before + marker

    send(b"c SELECT INBOX\r\n")
    until(b"c OK")
    send(b"d IDLE\r\n")
    until(b"+ ")
    send(b"DONE\r\n")
    until(b"d OK")
    message = b"Subject: compressed append\r\n\r\nhello\r\n"
    send(b"e APPEND INBOX {%d}\r\n" % len(message))
    until(b"+ ")
    send(message + b"\r\n")
    assert b"e OK" in until(b"e OK")
    send(b'f UID SEARCH SUBJECT "compressed append"\r\n')
    found = until(b"f OK")
    assert re.search(rb"\* SEARCH \d+", found), found
    send(b"g LOGOUT\r\n")
    assert b"* BYE" in until(b"g OK")
    sock.close()
