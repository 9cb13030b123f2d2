"""Work a command leaves for after its answer runs once the answer is on its way.

A body's first read is answered from memory and kept on disk afterwards (a write
transaction and its disk sync); the client must have the tagged answer first. Twisted
sends a write only when the reactor next polls, so the answer is flushed to the socket
before that work runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactorClock

from imapproxy.registry import AccountRegistry
from imapproxy.server.connection import ClientConnection
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import ServerContext, Session
from imapproxy.store import Store
from imapproxy.upstream.address import UpstreamAddress


class SocketTransport(FileDescriptor):
    """Buffers writes until ``doWrite``, as Twisted's TCP transport does."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        super().__init__(reactor)
        self.connected = 1
        self.sent = b""

    def writeSomeData(self, data: bytes) -> int:
        self.sent += bytes(data)
        return len(data)

    def getPeer(self) -> None:
        return None

    def getHost(self) -> None:
        return None


class Wrapper:
    """A transport over another one (as TLS is), written through synchronously."""

    def __init__(self, inner: SocketTransport) -> None:
        self.transport = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


def _session(tmp_path: Path, wrapped: bool = False) -> tuple[Session, SocketTransport]:
    clock = MemoryReactorClock()
    registry = AccountRegistry(
        clock, Store(tmp_path / "r"), UpstreamAddress.parse("imap+plain://127.0.0.1:1")
    )
    connection = ClientConnection(ServerContext(clock, registry))
    socket = SocketTransport(clock)
    connection.makeConnection(Wrapper(socket) if wrapped else socket)  # type: ignore[arg-type]
    assert socket.sent == b""  # the greeting waits for the reactor, as any write
    assert connection.session is not None
    return connection.session, socket


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_answer_is_sent_before_the_work_after_it(tmp_path: Path, wrapped: bool) -> None:
    session, socket = _session(tmp_path, wrapped)
    seen_by_work: list[bytes] = []

    async def handler() -> list[bytes]:
        session.send([b"* 1 FETCH (UID 7 BODY[] {2}\r\nhi)\r\n"])
        session.after_answer(lambda: seen_by_work.append(socket.sent))
        return [b"a1 OK FETCH completed\r\n"]

    _run(session.run_handler("a1", handler(), "FETCH"))
    assert seen_by_work and seen_by_work[0].endswith(b"a1 OK FETCH completed\r\n")
    assert b"* OK" in seen_by_work[0]  # the greeting went first


def test_work_runs_after_a_failed_command_too_and_one_failure_stops_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session, socket = _session(tmp_path)
    ran: list[bytes] = []

    def broken() -> None:
        raise OSError("disk full")

    async def handler() -> list[bytes]:
        session.after_answer(broken)
        session.after_answer(lambda: ran.append(socket.sent))
        raise CommandFailed("2 message(s) were expunged upstream meanwhile")

    with caplog.at_level(logging.ERROR):
        _run(session.run_handler("a2", handler(), "FETCH"))
    assert ran and ran[0].endswith(b"a2 NO 2 message(s) were expunged upstream meanwhile\r\n")
    assert "work after an answer failed" in caplog.text
    # Done once: the next command does not run it again.
    ran.clear()

    async def plain() -> list[bytes]:
        return [b"a3 OK NOOP completed\r\n"]

    _run(session.run_handler("a3", plain(), "NOOP"))
    assert ran == []


def test_a_closed_connection_is_not_written_to(tmp_path: Path) -> None:
    session, socket = _session(tmp_path)
    socket.connected = 0
    ran: list[int] = []

    async def handler() -> list[bytes]:
        session.after_answer(lambda: ran.append(1))
        return [b"a4 OK done\r\n"]

    _run(session.run_handler("a4", handler(), "FETCH"))
    assert ran == [1]
    assert socket.sent == b""


def _run(coroutine: object) -> None:
    """Drive a coroutine that never waits on the reactor to its end."""
    try:
        coroutine.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return
    raise AssertionError("the command waited on something")
