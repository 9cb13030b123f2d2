"""One load-test session: a real IMAP client looping a mixed read/write workload.

Each session logs in to one account and, until the deadline, repeats a round of what a
mail client does: now and then LIST and STATUS of every folder; SELECT INBOX; a flag
resync (``UID FETCH 1:* FLAGS``); the headers of a window of messages; one or two
bodies; two flag changes (``+/-\\Seen``, ``+/-\\Flagged``); one of MOVE or COPY to
``Archive/2024``, ``\\Deleted`` plus EXPUNGE, or an APPEND to Drafts; sometimes a look
into ``Archive/2024``, a NOOP, or a short IDLE. Every command is timed; an exception is
counted as an error of that command.

**Nothing lost** needs an expected final state that no race can blur. So every session
of an account *owns* a disjoint part of its INBOX (by a hash of the Message-ID, which
unlike a UID is the same through the proxy and on Dovecot) and changes only messages it
owns; it records what must be true of each at the end (where it is, its ``\\Seen`` and
``\\Flagged``, a copy in the archive with the flags it had when copied). Drafts carry a
Message-ID unique to the session. A change whose command failed is marked uncertain
and left out of the check (the failure itself is already counted as an error).

Sessions run as threads of a few worker processes (``worker_main``), so the client side
is not bound by one GIL: each worker reports its own CPU time, which tells whether it
was near one full core (then the client, not the proxy, would set the pace).
"""

from __future__ import annotations

import random
import re
import resource
import threading
import time
import traceback
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.response_parser import parse_fetch_response

ARCHIVE = "Archive/2024"
DRAFTS = "Drafts"
#: The flags whose final state the check compares (others are left alone).
TRACKED = (b"\\Seen", b"\\Flagged")
MESSAGE_ID = re.compile(rb"<([^>]+)>")
MSGID_ITEM = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
MSGID_KEY = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
HEADER_ITEMS = [
    "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
    "BODY.PEEK[HEADER.FIELDS (DATE FROM TO CC SUBJECT MESSAGE-ID REFERENCES)]",
]  # fmt: skip
#: Reads that another session's MOVE or EXPUNGE can make the proxy refuse (``raced``).
RACY = ("FETCH body", "FETCH headers", "FETCH ids")
#: At most this many error texts are kept per session (the counts are always exact).
ERROR_SAMPLES = 5


@dataclass(frozen=True)
class SessionSpec:
    """Who a session is: its number, its account, and which share of the INBOX it owns."""

    index: int
    user: str
    password: str
    #: Owns the INBOX messages whose Message-ID hashes to ``slot`` modulo ``slots``.
    slot: int
    slots: int
    #: Seconds after the common start at which it logs in (logins are spread out).
    start_delay: float


@dataclass
class Owned:
    """What must be true at the end of one message this session alone changes."""

    uid: int
    flags: set[bytes]
    in_inbox: bool = True
    #: Flags of its one copy in the archive (moved or copied), None: no copy there.
    archived: set[bytes] | None = None
    #: A command about it failed: its final state is unknown, so it is not checked.
    uncertain: bool = False


@dataclass
class SessionResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    #: Message-ID -> expected final state, for the check (``expectations``).
    owned: dict[bytes, Owned] = field(default_factory=dict)
    drafts: list[bytes] = field(default_factory=list)
    uncertain_drafts: list[bytes] = field(default_factory=list)
    rounds: int = 0
    reconnects: int = 0
    #: Reads refused (UNAVAILABLE) because another session had just moved or expunged
    #: a message asked for (gone from the next listing): a race RFC 2180 §4.1 allows a
    #: NO for, not counted as an error; reported apart.
    raced: int = 0
    raced_samples: list[str] = field(default_factory=list)


def owns(message_id: bytes, slot: int, slots: int) -> bool:
    """Whether the session in ``slot`` of ``slots`` owns the message (stable, not random)."""
    return zlib.crc32(message_id) % slots == slot


def fetch_all(client: IMAPClient, items: list[str]) -> dict[int, dict[bytes, Any]]:
    """``UID FETCH 1:* items``, as mail clients resync; imapclient's ``fetch`` wants
    explicit UIDs (it filters the answer by them), so this goes one level down."""
    imap = client._imap
    tag = imap._command("UID", "FETCH", "1:*", "(" + " ".join(items) + ")")
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    return parse_fetch_response(data, client.normalise_times, True)  # type: ignore[no-any-return]


def tracked(flags: Any) -> set[bytes]:
    return {f for f in flags if f in TRACKED}


def draft(spec: SessionSpec, number: int) -> tuple[bytes, bytes]:
    message_id = f"load-{spec.index}-{number}@imapproxy.bench".encode()
    raw = (
        b"From: Writer <w@example.org>\r\nTo: r@example.org\r\n"
        b"Subject: draft " + str(number).encode() + b" of session " + str(spec.index).encode()
        + b"\r\nMessage-ID: <" + message_id + b">\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"a draft line of text\r\n" * 60
    )  # fmt: skip
    return message_id, raw


class TimeUp(Exception):
    """The deadline passed: the session stops between two commands."""


class Session:
    """One client connection and its loop; ``run`` never raises."""

    def __init__(self, spec: SessionSpec, host: str, port: int, deadline: float, think: float):
        self.spec = spec
        self.host = host
        self.port = port
        self.deadline = deadline
        self.think = think
        self.random = random.Random(spec.index)
        self.result = SessionResult()
        self.client: IMAPClient | None = None
        self.folders: list[str] = []
        self.inbox_uids: list[int] = []
        self.drafts_made = 0
        #: (command, UIDs, error text) of a refused read, judged at the next INBOX listing.
        self.refused_read: tuple[str, set[int], str] | None = None

    # -- timing ------------------------------------------------------------------------

    def error(self, name: str, text: str) -> None:
        self.result.errors[name] += 1
        if len(self.result.error_samples) < ERROR_SAMPLES:
            self.result.error_samples.append(f"{self.spec.user} {name}: {text}"[:300])

    def timed(self, name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            answer = call(*args, **kwargs)
        except IMAPClient.Error as exc:
            if (
                name in RACY
                and self.refused_read is None
                and (b"UNAVAILABLE" in str(exc).encode() or b"EXPUNGEISSUED" in str(exc).encode())
            ):
                # Judged at the next listing: an error unless a message asked for is gone.
                uids = {int(u) for u in args[0]} if name != "FETCH ids" else set()
                self.refused_read = (name, uids, repr(exc))
            else:
                self.error(name, repr(exc))
            raise
        except Exception as exc:
            self.error(name, repr(exc))
            raise
        self.result.latencies[name].append(time.perf_counter() - started)
        return answer

    def pause(self) -> None:
        """Think time between two commands, and where a session stops once time is up."""
        if time.time() >= self.deadline:
            raise TimeUp()
        if self.think > 0:
            time.sleep(self.random.uniform(0, 2 * self.think))

    # -- connection --------------------------------------------------------------------

    def connect(self) -> None:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=120)
        self.client = client
        self.timed("LOGIN", client.login, self.spec.user, self.spec.password)
        self.timed("SELECT", client.select_folder, "INBOX")
        try:
            listing = self.timed("FETCH ids", fetch_all, client, ["FLAGS", MSGID_ITEM])
        except IMAPClient.Error:
            if self.refused_read is None:
                raise
            # Refused as UNAVAILABLE: a message went while it ran? Take the EXPUNGEs
            # (NOOP) and ask again: the same listing answered now means it was a
            # message that has gone since (a second refusal is an error).
            self.timed("NOOP", client.noop)
            listing = self.timed("FETCH ids", fetch_all, client, ["FLAGS", MSGID_ITEM])
            self.judge_refused_read(listing, gone=True)
        self.inbox_uids = sorted(listing)
        self.judge_refused_read(listing)
        if self.result.owned:
            # A reconnection: the UIDs are the proxy's and stable, only refresh them.
            for uid, item in listing.items():
                mid = self._mid(item)
                if mid in self.result.owned:
                    self.result.owned[mid].uid = uid
            return
        for uid, item in listing.items():
            mid = self._mid(item)
            if mid is not None and owns(mid, self.spec.slot, self.spec.slots):
                self.result.owned[mid] = Owned(uid, tracked(item[b"FLAGS"]))

    @staticmethod
    def _mid(item: dict[bytes, Any]) -> bytes | None:
        match = MESSAGE_ID.search(item.get(MSGID_KEY) or b"")
        return match.group(1) if match else None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.timed("LOGOUT", self.client.logout)
            except Exception:
                pass
            self.client = None

    def run(self) -> SessionResult:
        time.sleep(max(0.0, self.spec.start_delay))
        while time.time() < self.deadline:
            try:
                if self.client is None:
                    self.connect()
                self.round()
                self.result.rounds += 1
            except TimeUp:
                break
            except Exception:
                self.recover()
        if self.refused_read is not None:  # never judged: count it
            self.error(self.refused_read[0], self.refused_read[2])
        self.close()
        return self.result

    def recover(self) -> None:
        """After a failed command: carry on if the connection still answers, else reconnect."""
        client = self.client
        if client is not None:
            try:
                client.noop()
                return
            except Exception:
                try:
                    client.shutdown()
                except Exception:
                    pass
        self.client = None
        self.result.reconnects += 1
        time.sleep(0.5)

    # -- the workload ------------------------------------------------------------------

    def round(self) -> None:
        client = self.client
        assert client is not None
        n = self.result.rounds
        if n % 5 == 0:
            folders = self.timed("LIST", client.list_folders)
            self.folders = [name for flags, _, name in folders if b"\\Noselect" not in flags]
            self.pause()
            for folder in self.folders:
                self.timed(
                    "STATUS", client.folder_status, folder, ["MESSAGES", "UIDNEXT", "UNSEEN"]
                )
            self.pause()
        self.timed("SELECT", client.select_folder, "INBOX")
        flags = self.timed("FETCH flags", fetch_all, client, ["FLAGS"])
        self.inbox_uids = sorted(flags)
        self.judge_refused_read(flags)
        self.pause()
        if self.inbox_uids:
            start = self.random.randrange(max(1, len(self.inbox_uids) - 30))
            window = self.inbox_uids[start : start + 30]
            self.timed("FETCH headers", client.fetch, window, HEADER_ITEMS)
            self.pause()
            for uid in self.random.sample(self.inbox_uids, min(2, len(self.inbox_uids))):
                self.timed("FETCH body", client.fetch, [uid], ["BODY.PEEK[]"])
                self.pause()
        for _ in range(2):
            self.store_flag()
            self.pause()
        self.one_change()
        self.pause()
        if n % 4 == 1:
            self.timed("EXAMINE", client.select_folder, ARCHIVE, readonly=True)
            self.timed("FETCH flags", fetch_all, client, ["FLAGS"])
            self.pause()
        # The first round has both, so a short run on a slow machine still has each.
        if n % 3 == 0:
            self.timed("IDLE", client.idle)
            client.idle_check(timeout=self.random.uniform(0.5, 2.0))
            self.timed("DONE", client.idle_done)
            self.pause()
        if n % 3 != 0 or n == 0:
            self.timed("NOOP", client.noop)
        self.pause()

    def judge_refused_read(self, listing: dict[int, Any], gone: bool = False) -> None:
        """A read refused as UNAVAILABLE is a race if a message it asked for is gone now
        (``gone``: known otherwise, a retry of ``1:*`` answered)."""
        if self.refused_read is None:
            return
        name, uids, text = self.refused_read
        self.refused_read = None
        if not gone and uids <= set(listing):
            self.error(name, text)
            return
        self.result.raced += 1
        if len(self.result.raced_samples) < ERROR_SAMPLES:
            self.result.raced_samples.append(f"{self.spec.user} {name}: {text}"[:300])

    def _inbox_owned(self, copied: bool | None = None) -> tuple[bytes, Owned] | None:
        """A random owned message still in the INBOX (``copied``: with/without a copy)."""
        choices = [
            (mid, o)
            for mid, o in self.result.owned.items()
            if o.in_inbox and not o.uncertain and (copied is None or (o.archived is None) != copied)
        ]
        return self.random.choice(choices) if choices else None

    def store_flag(self) -> None:
        picked = self._inbox_owned()
        if picked is None:
            return
        _, owned = picked
        flag = self.random.choice(TRACKED)
        client = self.client
        assert client is not None
        try:
            if flag in owned.flags:
                self.timed("STORE -FLAGS", client.remove_flags, [owned.uid], [flag])
                owned.flags.discard(flag)
            else:
                self.timed("STORE +FLAGS", client.add_flags, [owned.uid], [flag])
                owned.flags.add(flag)
        except Exception:
            owned.uncertain = True
            raise

    def one_change(self) -> None:
        kind = self.random.choice(("move", "copy", "expunge", "append", "none"))
        client = self.client
        assert client is not None
        if kind == "append":
            self.drafts_made += 1
            mid, raw = draft(self.spec, self.drafts_made)
            try:
                self.timed("APPEND", client.append, DRAFTS, raw, flags=[b"\\Draft"])
            except Exception:
                self.result.uncertain_drafts.append(mid)
                raise
            self.result.drafts.append(mid)
            return
        if kind == "none":
            return
        picked = self._inbox_owned(copied=False)
        if picked is None:
            return
        _, owned = picked
        try:
            if kind == "move":
                self.timed("MOVE", client.move, [owned.uid], ARCHIVE)
                owned.in_inbox, owned.archived = False, set(owned.flags)
            elif kind == "copy":
                self.timed("COPY", client.copy, [owned.uid], ARCHIVE)
                owned.archived = set(owned.flags)
            else:
                self.timed("STORE +FLAGS", client.add_flags, [owned.uid], [b"\\Deleted"])
                self.timed("EXPUNGE", client.expunge)
                owned.in_inbox = False
        except Exception:
            owned.uncertain = True
            raise


def expectations(result: SessionResult) -> dict[str, Any]:
    """The JSON-ready expected final state of what this session changed."""
    owned = {
        mid.decode(): {
            "inbox": sorted(f.decode() for f in o.flags) if o.in_inbox else None,
            "archive": None if o.archived is None else sorted(f.decode() for f in o.archived),
        }
        for mid, o in result.owned.items()
        if not o.uncertain
    }
    return {
        "owned": owned,
        "uncertain": sum(o.uncertain for o in result.owned.values()),
        "drafts": [m.decode() for m in result.drafts],
        "uncertain_drafts": [m.decode() for m in result.uncertain_drafts],
    }


def worker_main(
    specs: list[SessionSpec],
    host: str,
    port: int,
    start_at: float,
    duration: float,
    think: float,
    results: Any,
) -> None:
    """A worker process: one thread per session; puts one dict on ``results`` at the end."""
    deadline = start_at + duration
    sessions = [Session(spec, host, port, deadline, think) for spec in specs]
    threads = [threading.Thread(target=s.run, daemon=True) for s in sessions]
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.time()) + 180)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    out: dict[str, Any] = {
        "cpu_s": cpu,
        "wall_s": time.monotonic() - wall_before,
        "hung": sum(t.is_alive() for t in threads),
        "sessions": [],
    }
    for session in sessions:
        try:
            r = session.result
            out["sessions"].append({
                "index": session.spec.index,
                "user": session.spec.user,
                "latencies": dict(r.latencies),
                "errors": dict(r.errors),
                "error_samples": r.error_samples,
                "rounds": r.rounds,
                "reconnects": r.reconnects,
                "raced": r.raced,
                "raced_samples": r.raced_samples,
                "expect": expectations(r),
            })  # fmt: skip
        except Exception:
            out.setdefault("crashes", []).append(traceback.format_exc())
    results.put(out)
