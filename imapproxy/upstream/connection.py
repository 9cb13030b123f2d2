"""One IMAP client connection to the upstream, as a Twisted protocol over the sans-IO core.

Commands run one at a time: each gets a tag, its untagged responses are collected
until the tagged answer, and every untagged response also goes to ``on_untagged`` so
the sync engine learns of EXISTS/EXPUNGE/FETCH/VANISHED the upstream sends on its own
(during IDLE or alongside another command). No mail state lives here.

The upstream may be slow, stalled or hostile, and each costs at most this connection:

- **Stalled**: a command whose answer brings no byte for ``STALL_SECONDS`` (or the
  command's own ``patience``) fails with UpstreamUnavailable and the connection is
  aborted, so a dead link is noticed in seconds rather than at the 120 s hard timeout.
  A large body still streaming is alive; so is an APPEND still uploading (the
  transport asking for the next slice is progress too).
- **Dripping**: once an answer has started, each ``RATE_WINDOW`` must bring at least
  ``MIN_RATE`` bytes per second; one byte a second over a large response fails.
- **Flooding**: the reader caps a line, a literal and a response (see ResponseReader);
  what one command keeps of its untagged responses is capped by ``max_retained``.
- **Garbage**, a tagged answer to a command never sent, an unexpected continuation:
  the command fails, the connection is aborted, and nothing later is read from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPullProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from imapproxy.compression import CompressionError, Deflate
from imapproxy.protocol import (
    DEFAULT_MAX_LITERAL,
    NEED_DATA,
    RAW_FETCH_ITEMS,
    ContinuationRequest,
    ParseError,
    ResponseCode,
    ResponseReader,
    TaggedResponse,
    UntaggedData,
    UntaggedStatus,
)
from imapproxy.send_now import no_delay, send_now
from imapproxy.upstream.errors import (
    ClosedAsIdleEnded,
    UpstreamRefused,
    UpstreamUnavailable,
    UpstreamUnreachable,
)

Untagged = UntaggedData | UntaggedStatus
#: Bytes written upstream as they are (a message being appended is not copied).
Chunk = bytes | bytearray


@dataclass
class Follower:
    """A command pipelined behind another (``run``'s ``after``): its tagged answer, and
    the untagged responses between the tagged answer before it and its own."""

    tag: str
    tagged: TaggedResponse | None = None
    untagged: list[Untagged] = field(default_factory=list)


@dataclass
class Result:
    """The outcome of one upstream command that the upstream answered OK."""

    code: ResponseCode | None
    text: str
    untagged: list[Untagged] = field(default_factory=list)
    #: The tagged answer to a command pipelined in front of this one (``run``'s
    #: ``before``); None when there was none or it never came.
    before: TaggedResponse | None = None
    #: The commands pipelined behind this one (``run``'s ``after``), in order.
    followers: list[Follower] = field(default_factory=list)

    @property
    def after(self) -> TaggedResponse | None:
        """The tagged answer to the first command pipelined behind this one."""
        return self.followers[0].tagged if self.followers else None

    @property
    def after_untagged(self) -> list[Untagged]:
        return self.followers[0].untagged if self.followers else []

    def data(self, name: str) -> list[UntaggedData]:
        return [u for u in self.untagged if isinstance(u, UntaggedData) and u.name == name]

    def codes(self) -> list[ResponseCode]:
        found = [u.code for u in self.untagged if isinstance(u, UntaggedStatus) and u.code]
        return found + ([self.code] if self.code else [])


@dataclass
class _Running:
    tag: str
    groups: list[Sequence[Chunk]]
    done: defer.Deferred[Result]
    on_continuation: Callable[[ContinuationRequest], None] | None = None
    untagged: list[Untagged] = field(default_factory=list)
    #: Wire bytes of the untagged responses kept in ``untagged``.
    retained: int = 0
    #: Tag of a command pipelined in front of this one, until its tagged answer comes.
    leading: str | None = None
    before: TaggedResponse | None = None
    #: Commands pipelined behind this one, and this command's own tagged answer once it
    #: came (the untagged responses after it belong to the first follower not answered).
    followers: list[Follower] = field(default_factory=list)
    own: TaggedResponse | None = None
    answered: int = 0
    #: Takes untagged data as it arrives; what it takes (returns True for) is not kept.
    consume: Callable[[UntaggedData], bool] | None = None


@dataclass
class _Command:
    """A command's tags and what to write: the first group of chunks (with the command
    pipelined in front and those behind), then the groups sent after each '+'."""

    tag: str
    leading: str | None
    groups: Sequence[Sequence[Chunk]]
    first: list[Chunk]
    followers: list[Follower]

    @classmethod
    def build(
        cls,
        protocol: UpstreamProtocol,
        make_groups: Callable[[str], Sequence[Sequence[Chunk]]],
        before: Callable[[str], bytes] | None,
        after: Callable[[str], bytes] | Sequence[Callable[[str], bytes]] | None,
    ) -> _Command:
        leading = protocol.next_tag() if before is not None else None
        tag = protocol.next_tag()
        groups = make_groups(tag)
        first: list[Chunk] = list(groups[0])
        if before is not None and leading is not None:
            first.insert(0, before(leading))
        followers: list[Follower] = []
        for line in [after] if callable(after) else after or ():
            if len(groups) != 1:
                raise ValueError("a command waiting for '+' cannot have one behind it")
            followers.append(Follower(protocol.next_tag()))
            first.append(line(followers[-1].tag))
        return cls(tag, leading, groups, first, followers)


def _kept(running: _Running, event: UntaggedData | UntaggedStatus) -> bool:
    """File an untagged response with the command it belongs to; False if the
    command's consume took it instead."""
    if running.own is not None:
        running.followers[running.answered].untagged.append(event)
    elif running.consume is not None and isinstance(event, UntaggedData) and running.consume(event):
        return False
    else:
        running.untagged.append(event)
    return True


#: Chunks larger than this are streamed to the transport in slices of SLICE bytes.
STREAM_THRESHOLD = 1 << 20
SLICE = 256 * 1024

#: A command that brings no byte back for this long counts the link as dead (seconds).
STALL_SECONDS = 8.0
#: Once an answer flows, each window of this many seconds must bring MIN_RATE bytes/s.
RATE_WINDOW = 10.0
MIN_RATE = 256
#: How often a running command's progress is checked (seconds).
CHECK_INTERVAL = 1.0
#: Room beyond the largest message for what one command may keep (a batch of bodies,
#: a metadata batch): its untagged responses together stay under
#: 2 x the largest message + this.
RETAINED_SLACK = 32 << 20


@implementer(IPullProducer)
class _SliceSender:
    """Pull producer writing one large buffer in slices, each when the transport wants more."""

    def __init__(self, protocol: UpstreamProtocol, data: Chunk) -> None:
        self.protocol = protocol
        self.view = memoryview(data)
        self.offset = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def resumeProducing(self) -> None:
        self.protocol.progress(min(SLICE, max(len(self.view) - self.offset, 0)))
        if self.offset >= len(self.view):
            self.protocol.transport.unregisterProducer()
            self.view.release()
            self.done.callback(None)
            return
        end = self.offset + SLICE
        self.protocol.write(bytes(self.view[self.offset : end]))
        self.offset = end

    def stopProducing(self) -> None:
        self.view.release()


class UpstreamProtocol(Protocol):
    """Sends tagged commands and routes responses; knows nothing of mailboxes."""

    transport: Any

    def __init__(self, clock: IReactorTime, command_timeout: float = 120.0) -> None:
        self.clock: Any = clock  # IReactorTime; zope interfaces confuse mypy here
        #: The hard cap on one command, however it progresses.
        self.command_timeout = command_timeout
        self.reader = ResponseReader(raw_fetch_items=RAW_FETCH_ITEMS)
        self.max_retained = 2 * DEFAULT_MAX_LITERAL + RETAINED_SLACK
        #: Whether the connection failed: nothing more is read from it.
        self.broken = False
        # Progress of the running command: when a byte last moved, how long a silence
        # is tolerated, and the current throughput window (None until bytes flow).
        self._patience = STALL_SECONDS
        self._progress_at = 0.0
        self._window_start: float | None = None
        self._window_bytes = 0
        self._deadline: float | None = None
        self._watch_call: Any = None
        self.greeting: defer.Deferred[UntaggedStatus] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.on_untagged: Callable[[Untagged], None] | None = None
        self._tags = (f"P{n}" for n in itertools.count(1))
        #: Tags handed out so far: a count that moves with every command sent.
        self.tags_issued = 0
        self._running: _Running | None = None
        #: The IDLE that end_idle ended, until its tagged answer.
        self._ending: _Running | None = None
        self._lock = defer.DeferredLock()
        self._got_greeting = False
        self.connected_ok = False
        #: COMPRESS=DEFLATE (RFC 4978) once the upstream said OK to it.
        self._deflate: Deflate | None = None
        self._compress_tag: str | None = None

    @property
    def usable(self) -> bool:
        """Connected, and nothing has gone wrong on this connection yet."""
        return self.connected_ok and not self.broken

    # Twisted callbacks -------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_ok = True
        no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.broken:
            return
        self.progress(len(data))
        if self._deflate is None:
            self._read(data)
            return
        self._deflate.feed(data)
        try:
            # One piece at a time: the reader's limits apply to what the stream inflates
            # to, so a small compressed bomb is cut off like a large plain answer.
            while not self.broken and (piece := self._deflate.inflate()):
                self._read(piece)
        except CompressionError as exc:
            self._fail(UpstreamUnavailable(f"upstream sent invalid compressed data: {exc}"))

    def _read(self, data: bytes) -> None:
        self.reader.receive_data(data)
        try:
            while not self.broken and (event := self.reader.next_event()) is not NEED_DATA:
                self._dispatch(event)
        except ParseError as exc:
            self._fail(UpstreamUnavailable(f"upstream sent a malformed response: {exc.reason}"))

    async def compress(self) -> None:
        """COMPRESS DEFLATE (RFC 4978): on the upstream's OK both directions are
        deflated from the next byte on. Raises UpstreamRefused when it says no."""

        def command(tag: str) -> list[list[bytes]]:
            self._compress_tag = tag
            return [[f"{tag} COMPRESS DEFLATE\r\n".encode()]]

        await self.run(command)

    def _start_compression(self) -> None:
        """Whatever the upstream sent after its OK is already compressed: it is taken
        back from the reader and inflated first."""
        unread = self.reader.take_unread()
        self._deflate = Deflate()
        if unread:
            self.dataReceived(unread)

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected_ok = False
        self.pause_watchdog()
        self.reader = ResponseReader(raw_fetch_items=RAW_FETCH_ITEMS)
        why = ""
        if reason is not None and not reason.check(ConnectionDone):
            why = f": {reason.getErrorMessage()}"  # e.g. a certificate that failed verification
        error = UpstreamUnavailable(f"connection to the upstream was lost{why}")
        if not self._got_greeting:
            self._got_greeting = True
            self.greeting.errback(error)
        if self._running is not None:
            running, self._running = self._running, None
            running.done.errback(error)
        if not self.closed.called:
            self.closed.callback(None)

    # sending -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self._deflate is not None:
            data = self._deflate.compress((data,))
        self.transport.write(data)

    def _write_group(self, group: Sequence[Chunk]) -> None:
        """Write chunks in order; a large one (a message being appended) is fed to the
        transport slice by slice as it drains, so it is never copied whole.

        What was written goes to the kernel at once (send_now), not on the reactor's
        next pass: the work a caller does next would hold the command back (a first
        sync's FETCH left 28 ms late, behind the storing meant to overlap its round
        trip; a body read's request, behind the rest of the client's command)."""
        pending = list(group)

        def write_next(_: object = None) -> None:
            while pending:
                chunk = pending.pop(0)
                if len(chunk) > STREAM_THRESHOLD:
                    sender = _SliceSender(self, chunk)
                    sender.done.addCallback(write_next)
                    self.transport.registerProducer(sender, False)
                    return
                self.write(bytes(chunk))

        write_next()
        send_now(self.transport)

    def next_tag(self) -> str:
        self.tags_issued += 1
        return next(self._tags)

    async def run(
        self,
        make_groups: Callable[[str], Sequence[Sequence[Chunk]]],
        on_continuation: Callable[[ContinuationRequest], None] | None = None,
        timeout: float | None = None,
        patience: float | None = None,
        deadline: float | None = None,
        before: Callable[[str], bytes] | None = None,
        after: Callable[[str], bytes] | Sequence[Callable[[str], bytes]] | None = None,
        consume: Callable[[UntaggedData], bool] | None = None,
    ) -> Result:
        """Send one command: groups of chunks, each group after the upstream's '+'.

        A group is written as separate writes, so a large literal is never joined into
        a second copy of itself. ``timeout`` caps the whole command; ``patience`` is how
        long the upstream may stay silent (STALL_SECONDS unless the command is one a
        server may think about before answering); ``deadline``, if given, is how soon
        it must be answered (IDLE: its "+").

        ``before`` pipelines a one-line command (no literal) in front, in the same
        write, so it costs no round trip of its own (``ENABLE QRESYNC`` before the first
        EXAMINE: RFC 5161 §3.1 allows pipelining ENABLE). Its untagged responses join
        this command's; its tagged answer, whatever it is, is ``Result.before`` (a
        refusal of it fails nothing by itself: the caller decides).

        ``after`` pipelines one-line commands behind a command of one group (the FETCH
        of a mailbox the EXAMINE opens; the EXAMINEs and FETCHes of more mailboxes): each
        one's untagged responses and tagged answer come back as a ``Result.followers``
        entry (the first also as ``Result.after_untagged`` and ``Result.after``). A
        server runs commands that depend on each other in order (RFC 3501 §5.5), so what
        comes after one tagged answer belongs to the next command. This command's
        refusal is raised once all are answered; a follower's refusal is its entry's.

        ``consume`` takes this command's untagged data as each response arrives; what
        it takes is neither kept in the Result nor counted against max_retained, so an
        answer of any size (a first sync's message list) is handled in constant memory.
        It must not raise: a failure of its own is its caller's to keep and report.
        """
        command: _Command | None = None
        written = False
        if self._ending is not None and self._ending is self._running and self.connected_ok:
            command = _Command.build(self, make_groups, before, after)
            if len(command.groups) == 1:
                # Behind an IDLE being ended: the upstream reads DONE first, so the command
                # may follow at once (RFC 2177), a round trip before IDLE's OK comes.
                self._write_group(command.first)
                written = True
        await self._lock.acquire()
        try:
            if not self.connected_ok or self.broken:
                if written:
                    raise ClosedAsIdleEnded("the connection closed as IDLE ended")
                raise UpstreamUnreachable("not connected to the upstream")
            if command is None:
                command = _Command.build(self, make_groups, before, after)
            running = _Running(
                command.tag, list(command.groups[1:]), defer.Deferred(), on_continuation
            )
            running.leading, running.followers = command.leading, command.followers
            running.consume = consume
            running.done.addTimeout(timeout or self.command_timeout, self.clock, self._timed_out)
            self._running = running
            self.watch_progress(patience, deadline)
            if not written:
                self._write_group(command.first)
            return await running.done
        finally:
            self._running = None
            self.pause_watchdog()
            self._lock.release()

    def end_idle(self) -> None:
        """Send DONE for the running IDLE. The next command run() is given goes out at
        once, behind it, instead of after IDLE's tagged answer."""
        self._ending = self._running
        self.write(b"DONE\r\n")
        send_now(self.transport)

    def _timed_out(self, result: object, timeout: float) -> None:
        self.broken = True
        self.abort()
        raise UpstreamUnavailable(f"the upstream did not answer within {timeout:.0f} s")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _fail(self, error: Exception) -> None:
        self.broken = True
        self.pause_watchdog()
        # Free what the upstream made us buffer (up to a line or literal cap) now, not
        # when the last reference to this protocol (a Failure's frames) goes away.
        self.reader = ResponseReader(raw_fetch_items=RAW_FETCH_ITEMS)
        if self._running is not None:
            running, self._running = self._running, None
            running.done.errback(error)
        self.abort()

    def limit_messages(self, max_message: int) -> None:
        """Accept literals (bodies) up to max_message, the largest the proxy takes."""
        self.reader.max_literal = max_message
        self.reader.max_response = max(self.reader.max_line, max_message) + (16 << 20)
        self.max_retained = 2 * max_message + RETAINED_SLACK

    # progress ----------------------------------------------------------------

    def watch_progress(self, patience: float | None = None, deadline: float | None = None) -> None:
        """Expect an answer from now on: silence for ``patience`` seconds (default
        STALL_SECONDS), a trickle below MIN_RATE, or (with ``deadline``) not being done
        within that many seconds, fails the running command."""
        now = self.clock.seconds()
        self._patience = STALL_SECONDS if patience is None else patience
        self._progress_at = now
        self._window_start, self._window_bytes = None, 0
        self._deadline = None if deadline is None else now + deadline
        if self._watch_call is None or not self._watch_call.active():
            self._watch_call = self.clock.callLater(CHECK_INTERVAL, self._check_progress)

    def pause_watchdog(self) -> None:
        """No answer is due (IDLE is waiting for news, or nothing runs)."""
        if self._watch_call is not None and self._watch_call.active():
            self._watch_call.cancel()
        self._watch_call = None

    @property
    def last_progress(self) -> float:
        """When a byte last moved or a command was last sent (clock seconds)."""
        return self._progress_at

    def progress(self, size: int) -> None:
        """Bytes moved (received, or a slice of an upload taken by the transport)."""
        now = self.clock.seconds()
        self._progress_at = now
        if self._window_start is None:
            self._window_start = now
        self._window_bytes += size

    def _check_progress(self) -> None:
        self._watch_call = None
        now = self.clock.seconds()
        silent = now - self._progress_at
        if silent >= self._patience:
            self._fail(UpstreamUnavailable(f"the upstream sent nothing for {silent:.0f} s"))
            return
        if self._deadline is not None and now >= self._deadline:
            self._fail(UpstreamUnavailable("the upstream did not answer in time"))
            return
        if self._window_start is not None and now - self._window_start >= RATE_WINDOW:
            if self._window_bytes < MIN_RATE * RATE_WINDOW:
                self._fail(
                    UpstreamUnavailable(
                        f"the upstream is too slow: {self._window_bytes} bytes"
                        f" in {now - self._window_start:.0f} s"
                    )
                )
                return
            self._window_start, self._window_bytes = now, 0
        self._watch_call = self.clock.callLater(CHECK_INTERVAL, self._check_progress)

    # receiving ---------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        if not self._got_greeting:
            self._got_greeting = True
            if isinstance(event, UntaggedStatus):
                self.greeting.callback(event)
            else:
                self.greeting.errback(UpstreamUnavailable("upstream sent no IMAP greeting"))
            return
        running = self._running
        if isinstance(event, TaggedResponse):
            if running is not None and running.leading is not None and event.tag == running.leading:
                running.leading, running.before = None, event
                return
            if running is not None and running.followers:
                if running.own is None and event.tag == running.tag:
                    running.own = event  # what follows is the first follower's
                    return
                following = running.followers[running.answered] if running.own else None
                if following is not None and event.tag == following.tag:
                    following.tagged = event
                    running.answered += 1
                    if running.answered < len(running.followers):
                        return
                    self._running = None
                    own = running.own
                    assert own is not None
                    if own.status != "OK":
                        running.done.errback(UpstreamRefused(own.status, own.code, own.text))
                        return
                    result = Result(own.code, own.text, running.untagged, running.before)
                    result.followers = running.followers
                    running.done.callback(result)
                    return
            if running is None or event.tag != running.tag or running.followers:
                self._fail(UpstreamUnavailable(f"unexpected tagged response {event.tag!r}"))
                return
            self._running = None
            if event.status == "OK":
                if event.tag == self._compress_tag:
                    # Before anything else reads on: what follows this OK is deflated.
                    self._compress_tag = None
                    self._start_compression()
                running.done.callback(
                    Result(event.code, event.text, running.untagged, running.before)
                )
            else:
                running.done.errback(UpstreamRefused(event.status, event.code, event.text))
        elif isinstance(event, ContinuationRequest):
            if running is None:
                self._fail(UpstreamUnavailable("unexpected continuation request"))
            elif running.groups:
                self._write_group(running.groups.pop(0))
            elif running.on_continuation is not None:
                running.on_continuation(event)
            else:
                self._fail(UpstreamUnavailable("unexpected continuation request"))
        elif isinstance(event, UntaggedData | UntaggedStatus):
            if isinstance(event, UntaggedStatus) and event.status == "BYE":
                if running is not None:
                    running.untagged.append(event)
                return  # the connection closes next; connectionLost reports it
            if running is not None and _kept(running, event):
                running.retained += self.reader.last_size
                if running.retained > self.max_retained:
                    self._fail(
                        UpstreamUnavailable(
                            f"the upstream sent more than {self.max_retained} bytes for one command"
                        )
                    )
                    return
            if self.on_untagged is not None:
                self.on_untagged(event)
