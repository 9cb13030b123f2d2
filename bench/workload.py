"""The client workload: what a mail client does when it opens an account and reads mail.

One call of ``run_session`` is one fresh imapclient connection: LOGIN; LIST; STATUS of
every folder; SELECT INBOX; the message list (``UID FETCH 1:* (FLAGS INTERNALDATE
RFC822.SIZE ENVELOPE BODYSTRUCTURE)``); then ``bodies`` full messages, one ``UID FETCH``
each, spread over the mailbox like a user opening mails; LOGOUT. Every phase is timed
on its own so a slow ratio can be traced to the command responsible.

The answers are kept in a form that does not depend on who numbered the UIDs (the proxy
has its own UID space), so proxy and direct answers can be compared for equality.
"""

from __future__ import annotations

import gc
import hashlib
import pickle
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.response_parser import parse_fetch_response

CLIENT_TIMEOUT = 120
STATUS_ITEMS = [b"MESSAGES", b"UIDNEXT", b"UNSEEN"]
LIST_ITEMS = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODYSTRUCTURE"]
#: Session phases in order; ``parse`` is the client parsing the message list, not I/O.
PHASES = ("login", "list", "status", "select", "fetch_list", "parse", "bodies", "logout")
_UNSELECTABLE = {b"\\NOSELECT", b"\\NONEXISTENT"}


@dataclass(frozen=True)
class MessageSummary:
    """One line of the message list, minus the UID (which only has meaning per server)."""

    flags: tuple[bytes, ...]
    internaldate: Any
    size: int
    envelope: Any
    bodystructure: Any


@dataclass
class Answers:
    """Everything the server told the client that a correct proxy must reproduce."""

    folders: list[str] = field(default_factory=list)
    status: dict[str, dict[str, int]] = field(default_factory=dict)
    exists: int = 0
    messages: list[MessageSummary] = field(default_factory=list)
    uids: list[int] = field(default_factory=list)
    #: Per fetched body, in fetch order: (position in the message list, size, sha256).
    bodies: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PackedAnswers:
    """A session's answers as one compressed blob, for the session that runs next.

    The direct session's answers are held while the proxy session runs, to compare
    them after. Held as parsed (at 100,000 messages, millions of objects), they made
    the second session's parse of the same bytes slower than the first's, whichever
    path it was: 1-3% in runs of one process parsing a captured 10,000-message answer
    with and without the first parse's summaries held, none with them packed.
    """

    blob: bytes

    @classmethod
    def of(cls, answers: Answers) -> PackedAnswers:
        return cls(zlib.compress(pickle.dumps(answers, pickle.HIGHEST_PROTOCOL), 1))

    def unpack(self) -> Answers:
        answers: Answers = pickle.loads(zlib.decompress(self.blob))
        return answers


@dataclass
class SessionResult:
    """Wall time per phase (seconds) and the answers of one session."""

    phases: dict[str, float]
    answers: Answers

    @property
    def wall(self) -> float:
        return sum(self.phases.values())

    @property
    def server_wall(self) -> float:
        """Wall time minus the client's own parsing: the part a server (or proxy) controls."""
        return self.wall - self.phases.get("parse", 0.0)


def body_positions(count: int, bodies: int) -> list[int]:
    """``bodies`` positions spread evenly from the first to the last message.

    Evenly spread rather than the newest few, so both ends of the mailbox (and the
    occasional large attachment) are read, as a user browsing would.
    """
    if count <= 0 or bodies <= 0:
        return []
    if bodies == 1 or count == 1:
        return [0]
    wanted = min(bodies, count)
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


class _Stopwatch:
    """Accumulates the duration of named phases, in order."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start


def _summary(item: dict[bytes, Any]) -> MessageSummary:
    # \Recent is per session and per server connection: not part of what must match.
    flags = tuple(sorted(f for f in item[b"FLAGS"] if f.upper() != b"\\RECENT"))
    return MessageSummary(
        flags,
        item[b"INTERNALDATE"],
        item[b"RFC822.SIZE"],
        item[b"ENVELOPE"],
        item[b"BODYSTRUCTURE"],
    )


def _uid_fetch_all(
    client: IMAPClient, items: list[bytes], watch: _Stopwatch
) -> dict[int, dict[bytes, Any]]:
    """``UID FETCH 1:* (items)``, as clients list a mailbox; wire time and parse time apart.

    ``IMAPClient.fetch("1:*", ...)`` sends the right command but then fails filtering
    the answer (imapclient 4.1: ``to_ints("1:*")`` raises ValueError), and a UID list
    instead of ``1:*`` would not be the command real clients send. So: send it through
    imaplib and parse with imapclient's own parser, exactly as ``fetch`` does.

    Parsing 10,000 ENVELOPEs and BODYSTRUCTUREs in pure Python takes this client longer
    than the server takes to send them; timing it as its own phase keeps it from
    hiding the server's (and so the proxy's) share.
    """
    imap = client._imap
    with watch.phase("fetch_list"):
        command = "(" + " ".join(i.decode() for i in items) + ")"
        tag = imap._command("UID", "FETCH", "1:*", command)
        typ, data = imap._command_complete("FETCH", tag)
        if typ != "OK":
            raise RuntimeError(f"UID FETCH 1:* failed: {typ} {data!r}")
        _, data = imap._untagged_response(typ, data, "FETCH")
    with watch.phase("parse"):
        return parse_fetch_response(data, client.normalise_times, True)


def _list_and_status(client: IMAPClient, answers: Answers, watch: _Stopwatch) -> None:
    with watch.phase("list"):
        listed = client.list_folders()
    answers.folders = sorted(name for _, _, name in listed)
    selectable = [
        name for flags, _, name in listed if not {f.upper() for f in flags} & _UNSELECTABLE
    ]
    with watch.phase("status"):
        for name in selectable:
            status = client.folder_status(name, STATUS_ITEMS)
            answers.status[name] = {k.decode(): int(v) for k, v in status.items()}


def _message_list(client: IMAPClient, answers: Answers, watch: _Stopwatch) -> None:
    with watch.phase("select"):
        answers.exists = int(client.select_folder("INBOX")[b"EXISTS"])
    fetched = _uid_fetch_all(client, LIST_ITEMS, watch)
    answers.uids = sorted(fetched)
    answers.messages = [_summary(fetched[uid]) for uid in answers.uids]


def _read_bodies(client: IMAPClient, answers: Answers, bodies: int, watch: _Stopwatch) -> None:
    with watch.phase("bodies"):
        for position in body_positions(len(answers.uids), bodies):
            uid = answers.uids[position]
            raw = client.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"]
            answers.bodies.append((position, len(raw), hashlib.sha256(raw).hexdigest()))


@contextmanager
def _isolated_gc() -> Iterator[None]:
    """Keep objects from earlier sessions out of this session's garbage collections.

    Parsing the message list allocates enough to trigger full collections, whose cost
    grows with every live object; the answers of the session that ran just before
    (kept for comparison) would otherwise make whichever path runs second parse
    measurably slower (~15% at N=10,000).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_session(host: str, port: int, user: str, password: str, bodies: int) -> SessionResult:
    """Run the whole workload on one new connection and return its timings and answers."""
    with _isolated_gc():
        return _run_session(host, port, user, password, bodies)


def _run_session(host: str, port: int, user: str, password: str, bodies: int) -> SessionResult:
    watch = _Stopwatch()
    answers = Answers()
    with watch.phase("login"):
        client = IMAPClient(host, port=port, ssl=False, use_uid=True, timeout=CLIENT_TIMEOUT)
        client.login(user, password)
    try:
        _list_and_status(client, answers, watch)
        _message_list(client, answers, watch)
        _read_bodies(client, answers, bodies, watch)
    except BaseException:
        client.shutdown()
        raise
    with watch.phase("logout"):
        client.logout()
    return SessionResult(watch.phases, answers)
