"""Events the :class:`CommandReader` produces besides command dataclasses."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

__all__ = [
    "NEED_DATA",
    "AppendEnd",
    "AppendStart",
    "CommandError",
    "ContinuationRequired",
    "LiteralChunk",
    "RawLine",
    "Sentinel",
]


class Sentinel(enum.Enum):
    """Markers returned by ``next_event`` that are not events."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


#: ``next_event`` has nothing more until ``receive_data`` (or a literal decision).
NEED_DATA = Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class CommandError:
    """A malformed command, already consumed in full (literals included).

    ``tag`` is None when no valid tag could be read (reply ``* BAD``).
    ``too_big`` marks a literal over the reader's limit (reply ``NO [TOOBIG]``).
    """

    tag: str | None
    reason: str
    too_big: bool = False


@dataclass(frozen=True, slots=True)
class ContinuationRequired:
    """The command waits on a synchronizing literal of ``size`` bytes.

    Call ``accept_literal()`` (and send ``+ Ready``) or ``reject_literal()``
    (and send a tagged NO/BAD); until then the reader yields nothing more.
    """

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class AppendStart:
    """An APPEND whose message (``size`` bytes) follows as LiteralChunk events."""

    tag: str
    mailbox: str
    flags: tuple[str, ...] | None
    internal_date: datetime.datetime | None
    size: int
    binary: bool = False
    #: A further message of the same MULTIAPPEND (RFC 3502), after the first.
    continued: bool = False


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """A piece of a streamed APPEND message, as it arrived."""

    data: bytes

    def __repr__(self) -> str:  # never log message bodies
        return f"LiteralChunk(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class AppendEnd:
    """The APPEND message and its closing CRLF have been read."""

    tag: str


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line read verbatim after ``expect_raw_line()`` (IDLE DONE, SASL data)."""

    data: bytes
