"""The Twisted protocol facing one client: bytes in, events to the session, bytes out.

No parsing here: ``dataReceived`` feeds the sans-IO CommandReader and runs what it
yields. Commands run one at a time in arrival order; while one runs, the reader is
only consulted for the raw line that command waits for (IDLE's DONE, an
AUTHENTICATE response). APPEND's message streams in as chunks.

After COMPRESS DEFLATE (RFC 4978) both directions go through server.compression: each
batch of output is compressed and sync-flushed just before it reaches the transport
(large literals slice by slice, as the client reads), and input is inflated one bounded
piece at a time, no further than the reader is allowed to run ahead of the commands.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from imapproxy.compression import CompressionError, Deflate
from imapproxy.protocol import (
    NEED_DATA,
    AppendEnd,
    AppendStart,
    CommandError,
    CommandReader,
    ContinuationRequired,
    LiteralChunk,
    RawLine,
)
from imapproxy.send_now import no_delay, send_now
from imapproxy.server import handlers, replies  # noqa: F401  (importing handlers registers them)
from imapproxy.server.session import APPEND_NEEDS_AUTH, Session

if TYPE_CHECKING:
    from imapproxy.server.session import ServerContext

log = logging.getLogger(__name__)

#: Stop reading from a client whose unread output exceeds this (it is not reading).
MAX_OUTPUT_BUFFER = 64 * 2**20
#: While a command runs, stop reading once this much pipelined input waits behind it,
#: so a client cannot make us buffer without bound what we are not yet consuming.
MAX_PIPELINED_INPUT = 2**20


#: Unread output (bytes) above which the transport pauses our answers.
OUTPUT_HIGH_WATER = 1 << 20
#: Output chunks larger than this are written in SLICE-sized pieces as the client reads.
STREAM_THRESHOLD = 1 << 20
SLICE = 256 * 1024


@implementer(IPushProducer)
class ClientConnection(Protocol):
    """Also the producer of its own output: the transport pauses us when the client
    reads slower than we answer, and long answers (FETCH 1:*) wait in ``drained``."""

    transport: Any

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.reader = CommandReader(max_append=context.max_append)
        self.session: Session | None = None
        self._busy = False
        self._raw_line: defer.Deferred[bytes] | None = None
        self._closed = False
        self._paused = False
        self._input_paused = False
        self._drain_waiters: list[defer.Deferred[None]] = []
        #: Output not yet handed to the transport (slices of a large literal, and
        #: whatever was written after them), sent as the client reads.
        self._backlog: deque[bytes | memoryview] = deque()
        #: COMPRESS=DEFLATE, once the client turned it on.
        self.deflate: Deflate | None = None

    def connectionMade(self) -> None:
        self.session = Session(self.context, self)
        # Pause us only when a good deal is unread: at Twisted's default (64 KiB) a long
        # FETCH would stop and go on every batch.
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = OUTPUT_HIGH_WATER
        self.transport.registerProducer(self, True)
        no_delay(self.transport)
        self.write_chunks(self.session.greeting())

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self.resumeProducing()
        if self._raw_line is not None and not self._raw_line.called:
            self._raw_line.errback(ConnectionError("client went away"))
        if self.session is not None:
            self.session.closed()

    @property
    def gone(self) -> bool:
        """The client has disconnected (a waiting login need not be checked any more)."""
        return self._closed

    # output ----------------------------------------------------------------

    def write_chunks(self, chunks: list[bytes]) -> None:
        """Write in order. A large literal (a 30 MB body) is cut into slices that go out
        as the client takes them, so the transport never holds a second copy of it."""
        if self._closed or self.transport is None:
            return
        if not self._backlog and all(len(chunk) <= STREAM_THRESHOLD for chunk in chunks):
            self._emit(chunks)
            return
        for chunk in chunks:
            if len(chunk) > STREAM_THRESHOLD:
                view = memoryview(chunk)
                self._backlog.extend(view[i : i + SLICE] for i in range(0, len(chunk), SLICE))
            else:
                self._backlog.append(chunk)
        self._write_backlog()

    def _write_backlog(self) -> None:
        # transport.write pauses us (synchronously) once its buffer is over the mark.
        while self._backlog and not self._paused and not self._closed:
            self._emit([self._backlog.popleft()])
        if self._closed:
            self._backlog.clear()

    def _emit(self, chunks: list[bytes] | list[bytes | memoryview]) -> None:
        """Hand one batch to the transport, compressed when COMPRESS is on."""
        if self.deflate is not None:
            self.transport.write(self.deflate.compress(chunks))
        elif len(chunks) == 1:
            self.transport.write(bytes(chunks[0]))
        else:
            self.transport.writeSequence([bytes(chunk) for chunk in chunks])

    def flush(self) -> None:
        """Hand what was written to the kernel now (send_now): a command's answer
        flushed before the work it leaves behind (keeping the body it just fetched: a
        disk sync) reaches the client first."""
        send_now(self.transport)

    def start_compression(self) -> None:
        """Compress from the next byte on, both ways (the tagged OK has gone out)."""
        self.deflate = Deflate()

    # IPushProducer: flow control of our output --------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write_backlog()
        if self._backlog and not self._closed:
            return  # paused again while writing the backlog
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

    def drained(self) -> defer.Deferred[None]:
        """Fires once the client has taken what we wrote (soon, unless it is slow).

        It always goes through the reactor, so one long answer lets other clients'
        commands and the upstream run between its parts.
        """
        waiter: defer.Deferred[None] = defer.Deferred()
        if (self._paused or self._backlog) and not self._closed:
            self._drain_waiters.append(waiter)
        else:
            self.context.reactor.callLater(0, waiter.callback, None)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    # input -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.deflate is not None:
            self.deflate.feed(data)
            self._inflate()
            return
        self.reader.receive_data(data)
        self._pump()
        self._throttle_input()

    def _inflate(self) -> None:
        """Feed the reader decompressed input piece by piece, stopping while the input is
        throttled: what waits stays compressed, however much it would inflate to."""
        assert self.deflate is not None
        while not self._closed and not self._input_paused:
            try:
                piece = self.deflate.inflate()
            except CompressionError as exc:
                log.info("closing a client connection: bad compressed data (%s)", exc)
                self.write_chunks(replies.untagged_status("BYE", "invalid compressed data"))
                self._closed = True
                self.transport.loseConnection()
                return
            if not piece:
                return
            self.reader.receive_data(piece)
            self._pump()
            self._throttle_input()

    def _throttle_input(self) -> None:
        """Pause the transport while a running command has more than enough queued behind it.

        Not while the command waits for a line of input itself (IDLE, AUTHENTICATE): that
        line is read from the buffer as soon as it is there, so it would only deadlock.
        """
        if (
            self._busy
            and self._raw_line is None
            and not self._input_paused
            and not self._closed
            and self.reader.buffered > MAX_PIPELINED_INPUT
        ):
            self._input_paused = True
            self.transport.pauseProducing()

    def _resume_input(self) -> None:
        if self._input_paused:
            self._input_paused = False
            if not self._closed:
                self.transport.resumeProducing()
                if self.deflate is not None:
                    self._inflate()

    def read_raw_line(self) -> defer.Deferred[bytes]:
        """The next line as sent, for the running command (IDLE, AUTHENTICATE)."""
        self.reader.expect_raw_line()
        self._raw_line = defer.Deferred()
        d = self._raw_line
        self.context.reactor.callLater(0, self._pump)
        return d

    def _pump(self) -> None:
        assert self.session is not None
        while not self._closed:
            if self._busy and self._raw_line is None:
                return
            event = self.reader.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, RawLine):
                waiting, self._raw_line = self._raw_line, None
                if waiting is not None:
                    waiting.callback(event.data)
                continue
            if isinstance(event, CommandError) and self._raw_line is not None:
                # The line the running command waits for was refused (too long):
                # hand it an empty line, so it ends with its own error.
                waiting, self._raw_line = self._raw_line, None
                waiting.callback(b"")
            elif isinstance(event, CommandError):
                self._command_error(event)
            elif isinstance(event, ContinuationRequired):
                self._continuation(event)
            elif isinstance(event, AppendStart):
                self.session.append_start(event)
            elif isinstance(event, LiteralChunk):
                self.session.append_chunk(event.data)
            elif isinstance(event, AppendEnd):
                self._run(self.session.append_end(event))
            else:
                self._run(self.session.handle(event))

    def _continuation(self, event: ContinuationRequired) -> None:
        """Ask for the literal, unless it is an APPEND message we would refuse anyway:
        then the client never sends it (and we never hold it)."""
        assert self.session is not None
        if self.reader.pending_append is not None and not self.session.may_append:
            self.reader.reject_literal()
            self.write_chunks(replies.tagged(event.tag, "BAD", APPEND_NEEDS_AUTH))
            return
        self.reader.accept_literal()
        self.write_chunks(replies.continuation("Ready for literal data"))

    def _command_error(self, event: CommandError) -> None:
        assert self.session is not None
        self.session.append_abort()
        if event.tag is None:
            self.write_chunks(replies.untagged_status("BAD", event.reason))
        elif event.too_big:
            self.write_chunks(replies.tagged(event.tag, "NO", event.reason, replies.code("TOOBIG")))
        else:
            self.write_chunks(replies.tagged(event.tag, "BAD", event.reason))

    def _run(self, coroutine: Any) -> None:
        self._busy = True
        d = defer.Deferred.fromCoroutine(coroutine)

        def done(result: object) -> None:
            self._busy = False
            self._resume_input()
            if isinstance(result, Failure):
                log.error(
                    "unhandled error in a command",
                    exc_info=(result.type, result.value, result.getTracebackObject()),
                )
                self.write_chunks(
                    replies.untagged_status("BYE", "internal error; closing connection")
                )
                self.close()
                return
            if not self._closed:
                self.context.reactor.callLater(0, self._pump)

        d.addBoth(done)


class ServerFactory(Factory):
    def __init__(self, context: ServerContext) -> None:
        self.context = context

    def buildProtocol(self, addr: Any) -> ClientConnection:
        protocol = ClientConnection(self.context)
        protocol.factory = self
        return protocol
