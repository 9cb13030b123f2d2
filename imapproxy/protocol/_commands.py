"""Client commands as frozen dataclasses, each with ``tag`` first.

APPEND is deliberately absent: a message can be tens of megabytes, so it is
streamed as ``AppendStart`` / ``LiteralChunk`` / ``AppendEnd`` events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from ._fetch import FetchAttribute
from ._search import SearchKey
from ._seqset import SequenceSet

__all__ = [
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Expunge",
    "Fetch",
    "Id",
    "Idle",
    "List",
    "Login",
    "Logout",
    "Move",
    "Namespace",
    "Noop",
    "QResync",
    "Rename",
    "Search",
    "Select",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Unselect",
    "Unsubscribe",
]


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class StartTLS:
    tag: str


@dataclass(frozen=True, slots=True)
class Idle:
    """IDLE; the caller then uses ``CommandReader.expect_raw_line`` for DONE."""

    tag: str


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or ``UID EXPUNGE set`` (RFC 4315) when ``uids`` is set."""

    tag: str
    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: bytes
    password: bytes

    def __repr__(self) -> str:  # never leak the password into logs
        return f"Login(tag={self.tag!r}, username={self.username!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE; ``initial_response`` is SASL-IR base64 text (``b"="`` = empty)."""

    tag: str
    mechanism: str
    initial_response: bytes | None = None

    def __repr__(self) -> str:
        ir = None if self.initial_response is None else "<redacted>"
        return (
            f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, initial_response={ir})"
        )


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971); ``params`` is None for ``ID NIL``."""

    tag: str
    params: tuple[tuple[bytes, bytes | None], ...] | None


@dataclass(frozen=True, slots=True)
class Enable:
    tag: str
    capabilities: tuple[str, ...]


#: (uidvalidity, modseq, known_uids, (known_sequence_set, known_uid_set))
QResync: TypeAlias = tuple[int, int, SequenceSet | None, tuple[SequenceSet, SequenceSet] | None]


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT, or EXAMINE when ``readonly``; CONDSTORE/QRESYNC parameters."""

    tag: str
    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """CREATE, with RFC 6154 ``(USE (\\Drafts))`` in ``special_use``."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST (with RFC 5258 options) or LSUB (``lsub=True``).

    ``select_options`` and ``return_options`` are upper-cased; a STATUS return
    option is ``("STATUS", (items...))``.
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[Any, ...] = ()
    lsub: bool = False
    #: RFC 5258 syntax was used (a selection list, RETURN, or a list of patterns), even
    #: if empty: the answer follows the extended rules then.
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH; ``return_options`` None means classic SEARCH."""

    tag: str
    uid: bool
    charset: str | None
    criteria: SearchKey
    return_options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    tag: str
    uid: bool
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changedsince: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """STORE; ``mode`` is ``"+"``, ``"-"`` or ``""`` (replace)."""

    tag: str
    uid: bool
    sequence_set: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    uid: bool
    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move:
    tag: str
    uid: bool
    sequence_set: SequenceSet
    mailbox: str


Command: TypeAlias = (
    Capability
    | Noop
    | Logout
    | StartTLS
    | Idle
    | Check
    | Close
    | Unselect
    | Namespace
    | Expunge
    | Login
    | Authenticate
    | Id
    | Enable
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Status
    | Search
    | Fetch
    | Store
    | Copy
    | Move
)
