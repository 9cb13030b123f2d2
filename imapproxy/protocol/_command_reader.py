"""The server-side, resumable command reader (h11-style ``next_event``).

Commands are collected as line segments and literals (see ``_lexer``), then
parsed in one go. Literals are the only place the reader must stop and ask:
a synchronizing ``{n}`` pauses it until the caller accepts (``+ Ready``) or
rejects; the APPEND message literal is streamed out as LiteralChunk events
instead of being folded into the command. Errors never raise: a malformed
command is consumed whole and reported as a CommandError event, so the
connection stays in sync and usable.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from typing import TypeAlias

from ._buffer import LINE_TOO_LONG, ReceiveBuffer
from ._command_parser import (
    KNOWN_COMMANDS,
    AppendPrefix,
    parse_append_more,
    parse_append_prefix,
    parse_command,
    parse_tag,
)
from ._commands import Command
from ._errors import ParseError
from ._events import (
    NEED_DATA,
    AppendEnd,
    AppendStart,
    CommandError,
    ContinuationRequired,
    LiteralChunk,
    RawLine,
    Sentinel,
)
from ._lexer import Scanner
from ._values import Atom

__all__ = ["CommandReader", "ReaderEvent"]

ReaderEvent: TypeAlias = (
    Command | CommandError | ContinuationRequired | AppendStart | LiteralChunk | AppendEnd | RawLine
)

_LITERAL_MARKER = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\Z")
_FIRST_WORD = re.compile(rb"[^ ]+")
_QUOTED_STRING = re.compile(rb'"(?:[^"\\\r\n]|\\[^\r\n])*"')
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


def _grammar_error(parts: list[bytes]) -> str | None:
    """What RFC 9051 forbids outside literals, which the lexer would let through.

    NUL is no CHAR at all; 8-bit bytes may appear only inside a quoted string (as
    UTF-8) or a literal, never in an atom. (Bare CR or LF end a quoted string's line
    and are refused by the lexer.)
    """
    for text in parts[0::2]:
        if b"\0" in text:
            return "NUL is not allowed in a command"
        if _EIGHT_BIT.search(text) and _EIGHT_BIT.search(_QUOTED_STRING.sub(b'""', text)):
            return "8-bit characters are allowed only in a quoted string or a literal"
    return None


class _Mode(enum.Enum):
    LINE = enum.auto()  # reading a line segment of a command
    LITERAL = enum.auto()  # reading a literal folded into the command
    AWAIT = enum.auto()  # waiting for accept_literal / reject_literal
    APPEND_DATA = enum.auto()  # streaming an APPEND message
    APPEND_TAIL = enum.auto()  # reading the line after the APPEND message
    SKIP = enum.auto()  # dropping a literal we refused, then DISCARD
    DISCARD = enum.auto()  # dropping the rest of a failed command
    DISCARD_LINE = enum.auto()  # dropping an over-long line through LF


def _guess_tag(first: bytes) -> str | None:
    m = _FIRST_WORD.match(first)
    if not m:
        return None
    try:
        return parse_tag(Atom(m.group(0).decode("ascii")))
    except UnicodeDecodeError:
        return None


class CommandReader:
    """Turn client bytes into commands and events.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_event` until
    it returns ``NEED_DATA``. Input may be split anywhere; pipelined commands
    stay buffered until asked for.
    """

    def __init__(
        self,
        max_line: int = 65536,
        max_literal: int = 65536,
        max_append: int = 64 * 2**20,
        max_depth: int = 32,
        max_command: int = 1 << 20,
        max_literals: int = 1000,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_append = max_append
        self.max_depth = max_depth
        #: Cap on one command's lines and literals together (an APPEND message
        #: is not counted: it is streamed and capped by ``max_append``).
        self.max_command = max_command
        #: Cap on the number of literals in one command.
        self.max_literals = max_literals
        self._buf = ReceiveBuffer()
        self._mode = _Mode.LINE
        self._parts: list[bytes] = []
        self._chunks: list[bytes] = []
        self._need = 0
        self._ready: deque[ReaderEvent] = deque()
        self._pending: ContinuationRequired | None = None
        self._pending_append: AppendStart | None = None
        self._append_tag = ""
        self._append_mailbox = ""
        self._raw_line = False
        # The command being collected: its size so far, literal count, tag and name.
        self._size = 0
        self._literals = 0
        self._tag: str | None = None
        self._name = ""

    # -- caller API ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client. An APPEND message in progress is
        passed through without going into the buffer."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._mode is _Mode.APPEND_DATA and not self._buf and self._need and data:
            k = min(self._need, len(data))
            self._ready.append(LiteralChunk(data if k == len(data) else data[:k]))
            self._need -= k
            data = data[k:]
        self._buf.append(data)

    @property
    def awaiting_continuation(self) -> ContinuationRequired | None:
        """The pending synchronizing literal, if the reader is paused on one."""
        return self._pending

    @property
    def pending_append(self) -> AppendStart | None:
        """The APPEND whose message literal awaits a decision, if that is what is pending
        (so the caller can refuse it without the client sending the message)."""
        return self._pending_append

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (pipelined input the caller has not asked for)."""
        return len(self._buf)

    def accept_literal(self) -> None:
        """Let the client send the pending literal (the caller sends ``+``)."""
        if self._pending is None:
            raise RuntimeError("no literal is pending")
        self._pending = None
        if self._pending_append is not None:
            self._ready.append(self._pending_append)
            self._pending_append = None
            self._mode = _Mode.APPEND_DATA
        else:
            self._chunks = []
            self._mode = _Mode.LITERAL

    def reject_literal(self) -> None:
        """Drop the command waiting on a literal (the caller sends NO/BAD)."""
        if self._pending is None:
            raise RuntimeError("no literal is pending")
        self._pending = None
        self._pending_append = None
        self._parts = []
        self._mode = _Mode.LINE

    def expect_raw_line(self) -> None:
        """Return the next line verbatim as RawLine (IDLE's DONE, SASL data)."""
        self._raw_line = True

    def next_event(self) -> ReaderEvent | Sentinel:
        """The next event, or ``NEED_DATA``.

        While a synchronizing literal awaits a decision, the
        ContinuationRequired event is returned once and NEED_DATA afterwards.
        """
        while True:
            if self._ready:
                return self._ready.popleft()
            event = self._step()
            if event is None:
                continue
            return event

    # -- state machine ------------------------------------------------------

    def _step(self) -> ReaderEvent | Sentinel | None:
        """Advance once; None means "state changed, go again"."""
        mode = self._mode
        if mode is _Mode.LINE:
            return self._read_command_line()
        if mode is _Mode.AWAIT:
            return NEED_DATA
        if mode is _Mode.LITERAL:
            if self._need:
                if not self._buf:
                    return NEED_DATA
                chunk = self._buf.take(self._need)
                self._chunks.append(chunk)
                self._need -= len(chunk)
                if self._need:
                    return NEED_DATA
            self._parts.append(b"".join(self._chunks))
            self._chunks = []
            self._mode = _Mode.LINE
            return None
        if mode is _Mode.APPEND_DATA:
            if self._need:
                if not self._buf:
                    return NEED_DATA
                chunk = self._buf.take(self._need)
                self._need -= len(chunk)
                return LiteralChunk(chunk)
            self._mode = _Mode.APPEND_TAIL
            return None
        if mode is _Mode.APPEND_TAIL:
            return self._read_append_tail()
        if mode is _Mode.SKIP:
            if self._need:
                self._need -= self._buf.skip(self._need)
                if self._need:
                    return NEED_DATA
            self._mode = _Mode.DISCARD
            return None
        if mode is _Mode.DISCARD:
            line = self._buf.read_line(self.max_line)
            if line is None:
                return NEED_DATA
            if line is LINE_TOO_LONG:
                self._mode = _Mode.DISCARD_LINE
                return None
            assert isinstance(line, bytes)
            m = _LITERAL_MARKER.search(line)
            if m and m.group(3):
                self._need = int(m.group(2))
                self._mode = _Mode.SKIP
            else:
                self._mode = _Mode.LINE
            return None
        assert mode is _Mode.DISCARD_LINE
        if self._buf.discard_line():
            self._mode = _Mode.LINE
            return None
        return NEED_DATA

    def _fail(
        self, tag: str | None, reason: str, *, skip: int | None = None, too_big: bool = False
    ) -> CommandError:
        """Drop the command in progress; ``skip`` a refused non-sync literal."""
        self._parts = []
        self._chunks = []
        if skip is not None:
            self._need = skip
            self._mode = _Mode.SKIP
        else:
            self._mode = _Mode.LINE
        return CommandError(tag, reason, too_big)

    def _read_command_line(self) -> ReaderEvent | Sentinel | None:
        line = self._buf.read_line(self.max_line)
        if line is None:
            return NEED_DATA
        if line is LINE_TOO_LONG:
            # The refused line is still buffered: its first word names the tag to answer.
            first = self._parts[0] if self._parts else self._buf.peek(128)
            tag = _guess_tag(first) if b" " in first else None
            self._parts = []
            self._raw_line = False
            self._mode = _Mode.DISCARD_LINE
            return CommandError(tag, "line too long")
        assert isinstance(line, bytes)
        if self._raw_line and not self._parts:
            self._raw_line = False
            return RawLine(line)
        if not self._parts:
            if not line.strip():
                return None  # stray empty line: ignore, as most servers do
            self._size = 0
            self._literals = 0
            self._tag = None
            self._name = ""
        self._size += len(line) + 2
        m = _LITERAL_MARKER.search(line)
        if not m:
            self._parts.append(line)
            parts, self._parts = self._parts, []
            if self._size > self.max_command:
                return CommandError(_guess_tag(parts[0]), "command too big", True)
            return self._parse(parts)
        self._parts.append(line[: m.start()])
        return self._literal_announced(int(m.group(2)), not m.group(3), bool(m.group(1)))

    def _parse(self, parts: list[bytes]) -> ReaderEvent:
        tag = _guess_tag(parts[0])
        error = _grammar_error(parts)
        if error is not None:
            return CommandError(tag, error)
        try:
            values = Scanner(parts, numbers=False, max_depth=self.max_depth).read_all()
            if (
                len(values) > 1
                and isinstance(values[1], Atom)
                and values[1].value.upper() == "APPEND"
            ):
                return CommandError(parse_tag(values[0]), "APPEND needs a message literal")
            return parse_command(values)
        except ParseError as exc:
            return CommandError(exc.tag or tag, exc.reason)

    def _literal_announced(self, size: int, sync: bool, binary: bool) -> ReaderEvent | None:
        """A line segment ended with a literal marker: decide what it is."""
        parts = self._parts
        skip = None if sync else size
        if len(parts) == 1:
            # The command's first literal: read its tag and name, once. Later
            # literals reuse them, so a command with many literals is not
            # lexed again for each one.
            tag = self._tag = _guess_tag(parts[0])
            try:
                values = Scanner(parts, numbers=False, max_depth=self.max_depth).read_all(
                    partial=True
                )
            except ParseError as exc:
                return self._fail(tag, exc.reason, skip=skip)
            if tag is None or not values or parse_tag(values[0]) is None:
                return self._fail(None, "invalid tag", skip=skip)
            first = values[1] if len(values) > 1 else None
            self._name = first.value.upper() if isinstance(first, Atom) else ""
            if self._name not in KNOWN_COMMANDS:
                return self._fail(tag, "unknown command", skip=skip)
        tag = self._tag
        assert tag is not None
        if self._name == "APPEND":
            # Only APPEND needs the arguments so far, to recognise its message
            # literal; its prefix holds at most a few literals, so this stays cheap.
            try:
                values = Scanner(parts, numbers=False, max_depth=self.max_depth).read_all(
                    partial=True
                )
                if len(values) > 2:
                    prefix = parse_append_prefix(
                        Scanner(parts, numbers=False, max_depth=self.max_depth).read_all()[2:]
                    )
                    return self._append_message(tag, prefix, size, sync, binary)
            except ParseError as exc:
                return self._fail(tag, exc.reason, skip=skip)
        if binary:
            return self._fail(tag, "binary literal not allowed here", skip=skip)
        if size > self.max_literal:
            return self._fail(tag, "literal too big", skip=skip, too_big=True)
        self._literals += 1
        self._size += size
        if self._literals > self.max_literals or self._size > self.max_command:
            return self._fail(tag, "command too big", skip=skip, too_big=True)
        self._need = size
        if sync:
            self._pending = ContinuationRequired(tag, size)
            self._mode = _Mode.AWAIT
            return self._pending
        self._chunks = []
        self._mode = _Mode.LITERAL
        return None

    def _append_message(
        self,
        tag: str,
        prefix: AppendPrefix,
        size: int,
        sync: bool,
        binary: bool,
    ) -> ReaderEvent:
        """The literal announced is APPEND's message: stream it (not counted
        toward ``max_command``; ``max_append`` caps it)."""
        if size > self.max_append:
            return self._fail(tag, "message too big", skip=None if sync else size, too_big=True)
        mailbox, flags, when = prefix
        self._parts = []
        self._need = size
        continued = self._mode is _Mode.APPEND_TAIL
        self._append_tag = tag
        self._append_mailbox = mailbox
        start = AppendStart(tag, mailbox, flags, when, size, binary, continued)
        if sync:
            self._pending = ContinuationRequired(tag, size)
            self._pending_append = start
            self._mode = _Mode.AWAIT
            return self._pending
        self._mode = _Mode.APPEND_DATA
        return start

    def _read_append_tail(self) -> ReaderEvent | Sentinel | None:
        line = self._buf.read_line(self.max_line)
        if line is None:
            return NEED_DATA
        tag = self._append_tag
        if line is LINE_TOO_LONG:
            self._mode = _Mode.DISCARD_LINE
            return CommandError(tag, "line too long")
        assert isinstance(line, bytes)
        if not line.strip():
            self._mode = _Mode.LINE
            self._append_tag = ""
            return AppendEnd(tag)
        m = _LITERAL_MARKER.search(line)
        skip = int(m.group(2)) if m and m.group(3) else None
        if m is None or not line.startswith(b" "):
            self._append_tag = ""
            return self._fail(tag, "unexpected data after APPEND message", skip=skip)
        # MULTIAPPEND (RFC 3502): [flags] [date-time] and the next message's literal.
        segment = line[1 : m.start()]
        error = _grammar_error([segment])
        try:
            if error is not None:
                raise ParseError(error)
            values = Scanner([segment], numbers=False, max_depth=self.max_depth).read_all()
            flags, when = parse_append_more(values)
        except ParseError as exc:
            self._append_tag = ""
            return self._fail(tag, exc.reason, skip=skip)
        prefix = (self._append_mailbox, flags, when)
        return self._append_message(tag, prefix, int(m.group(2)), not m.group(3), bool(m.group(1)))
