"""Scenario ``replay``: queued offline changes replayed after the link returns.

Per repeat, on a fresh account (an INBOX of as many messages as there are changes) and
a new proxy whose upstream goes through a ``tests.support.relay.Relay`` in front of the
emulated link (the relay can be cut; the link gives the round-trip time):

1. a client reads INBOX, Archive/2024 and Drafts through the proxy (metadata cached);
2. the relay is cut, and the client makes ``--replay-changes`` changes, as a mail
   client would, one command each: mostly single-message flag STOREs (marking messages
   read one by one, some flagged), some single-message MOVEs to Archive/2024, some
   ``\\Deleted`` STOREs each few followed by an EXPUNGE, and a few APPENDs to Drafts;
3. the relay is resumed; the proxy reconnects on its own (queued changes keep it
   trying, with backoff) and replays. Timed until the outbox is empty, polling the
   state dir the way ``imapproxy status --json`` reads it.

Upstream commands are counted in the bytes the relay forwards upstream: every line that
starts with the proxy's tag (``P<n> ``), skipping literal data (``{n}`` / ``{n+}``), per
connection. That is exact whatever the log level, and it names each command. Reported:
the wait for the reconnection (resume to the first command of the connection that
replays: the proxy's backoff, not the replay), the drain (that command to empty
outbox), upstream commands (every connection) and commands per change. Then the upstream's final state, read straight from Dovecot,
must be what the client did: flags set, moved messages in the target once, expunged
messages gone, each append present once; otherwise the run fails.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient

from bench.accounts import seed_user
from bench.report import human_bytes, seconds, table
from bench.scenario import Context, Outcome, Scenario, group, log, median, register
from imapproxy import status_report
from tests.support.relay import Relay

#: How long the replay may take before the run calls it a problem.
DRAIN_TIMEOUT = 600.0
#: The proxy's upstream tags (imapproxy/upstream/connection.py).
TAG = re.compile(rb"^P\d+ ")
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
MESSAGE_ID = re.compile(rb"<([^>]+)>")
MSGID_FIELD = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"


#: Commands only a replay sends (they mark the connection that replays).
REPLAY_COMMANDS = frozenset(
    {"UID STORE", "UID MOVE", "UID COPY", "UID EXPUNGE", "APPEND", "STORE", "MOVE", "COPY"}
)


class CommandCounter:
    """Counts tagged command lines in the client->server byte stream of each connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[bytearray, list[int]]] = {}
        self.commands: Counter[str] = Counter()
        #: Per connection: when its first command went up, and whether it replays.
        self._first: dict[int, float] = {}
        self._replaying: set[int] = set()

    @property
    def first_at(self) -> float | None:
        """When the first command went up on a connection that replays changes (its
        LOGIN): the proxy's other connection (the watcher, which only listens for news)
        may come back earlier, while the replaying link still backs off."""
        with self._lock:
            times = [self._first[c] for c in self._replaying if c in self._first]
            return min(times, default=None)

    def reset(self) -> None:
        with self._lock:
            self.commands.clear()
            self._first.clear()
            self._replaying.clear()

    def total(self) -> int:
        with self._lock:
            return sum(self.commands.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.commands)

    def __call__(self, connection: object, data: bytes) -> None:
        """The relay's tap: ``data`` went upstream on ``connection``."""
        with self._lock:
            buffer, skip = self._streams.setdefault(id(connection), (bytearray(), [0]))
            buffer += data
            while buffer:
                if skip[0]:
                    taken = min(skip[0], len(buffer))
                    del buffer[:taken]
                    skip[0] -= taken
                    continue
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buffer[: end + 2])
                del buffer[: end + 2]
                if TAG.match(line):
                    self._count(id(connection), line)
                literal = LITERAL.search(line)
                if literal:
                    skip[0] = int(literal.group(1))

    def _count(self, connection: int, line: bytes) -> None:
        words = line.split(b" ", 3)
        name = words[1].decode("ascii", "replace").upper().strip()
        if name == "UID" and len(words) > 2:
            name = f"UID {words[2].decode('ascii', 'replace').upper().strip()}"
        self.commands[name] += 1
        self._first.setdefault(connection, time.monotonic())
        if name in REPLAY_COMMANDS:
            self._replaying.add(connection)


@dataclass
class Plan:
    """What the client does offline, and what the upstream must hold afterwards."""

    flags: dict[bytes, bytes] = field(default_factory=dict)  # Message-ID -> flag added
    moved: list[bytes] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)
    expunges: int = 0
    appended: list[bytes] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return (
            len(self.flags) + len(self.moved) + len(self.deleted) + self.expunges
            + len(self.appended)
        )  # fmt: skip


def mix(changes: int) -> dict[str, int]:
    """The shares of a realistic offline session: 85% flags, 5% moves, 8% deletes with an
    EXPUNGE per 20, 2% appends (each at least one)."""
    appends = max(1, changes // 50)
    moves = max(1, changes // 20)
    deletes = max(1, changes * 8 // 100)
    expunges = max(1, deletes // 20)
    flags = changes - appends - moves - deletes - expunges
    if flags < 1:
        raise ValueError(f"too few changes for the mix: {changes}")
    return {"flags": flags, "moves": moves, "deletes": deletes, "expunges": expunges,
            "appends": appends}  # fmt: skip


def _message_ids(client: IMAPClient, folder: str) -> dict[bytes, tuple[int, set[bytes]]]:
    """Message-ID -> (UID, flags) of every message in folder."""
    client.select_folder(folder)
    uids = client.search(["ALL"])
    out = {}
    for uid, item in client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).items():
        match = MESSAGE_ID.search(item[MSGID_FIELD])
        assert match is not None, item
        flags = {f for f in item[b"FLAGS"] if f.upper() != b"\\RECENT"}
        out[match.group(1)] = (uid, flags)
    return out


def _draft(index: int, tag: str) -> tuple[bytes, bytes]:
    message_id = f"replay-{tag}-{index}@imapproxy.bench".encode()
    raw = (
        b"From: Writer <w@example.org>\r\nTo: r@example.org\r\n"
        b"Subject: written offline " + str(index).encode() + b"\r\n"
        b"Message-ID: <" + message_id + b">\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"draft text\r\n" * 40
    )
    return message_id, raw


def make_changes(client: IMAPClient, changes: int, tag: str) -> Plan:
    """Make the mix through the proxy, one command per change, as a mail client would."""
    shares = mix(changes)
    inbox = _message_ids(client, "INBOX")
    order = sorted(inbox, key=lambda mid: inbox[mid][0])
    plan = Plan()
    flagging = order[: shares["flags"]]
    moving = order[shares["flags"] : shares["flags"] + shares["moves"]]
    deleting = order[shares["flags"] + shares["moves"] :][: shares["deletes"]]
    if len(deleting) < shares["deletes"]:
        raise ValueError("the INBOX is too small for the mix")
    for i, mid in enumerate(flagging):
        uid, flags = inbox[mid]
        wanted = b"\\Flagged" if i % 10 == 9 else b"\\Seen"
        if wanted in flags:
            wanted = b"\\Flagged" if wanted == b"\\Seen" else b"\\Seen"
        if wanted in flags:
            wanted = b"$Replayed"
        client.add_flags([uid], [wanted])
        plan.flags[mid] = wanted
    for mid in moving:
        client.move([inbox[mid][0]], "Archive/2024")
        plan.moved.append(mid)
    per_expunge = -(-len(deleting) // shares["expunges"])
    for start in range(0, len(deleting), per_expunge):
        for mid in deleting[start : start + per_expunge]:
            client.add_flags([inbox[mid][0]], [b"\\Deleted"])
            plan.deleted.append(mid)
        client.expunge()
        plan.expunges += 1
    for i in range(shares["appends"]):
        message_id, raw = _draft(i, tag)
        client.append("Drafts", raw, flags=[b"\\Draft"])
        plan.appended.append(message_id)
    return plan


def check_upstream(ctx: Context, user: str, password: str, plan: Plan) -> list[str]:
    """What differs between Dovecot's state and what the client did (empty: all right)."""
    dovecot = ctx.bench.dovecot
    wrong = []
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=120) as client:
        client.login(user, password)
        inbox = _message_ids(client, "INBOX")
        unset = [
            mid for mid, flag in plan.flags.items() if flag not in inbox.get(mid, (0, set()))[1]
        ]
        if unset:
            wrong.append(f"{len(unset)} flag change(s) missing upstream, e.g. {unset[0]!r}")
        still = [mid for mid in plan.moved + plan.deleted if mid in inbox]
        if still:
            wrong.append(f"{len(still)} moved or expunged message(s) still in INBOX")
        client.select_folder("Archive/2024")
        for mid in plan.moved:
            found = client.search(["HEADER", "Message-ID", mid.decode()])
            if len(found) != 1:
                wrong.append(f"moved message {mid!r} is {len(found)} times in Archive/2024")
        client.select_folder("Drafts")
        for mid in plan.appended:
            found = client.search(["HEADER", "Message-ID", mid.decode()])
            if len(found) != 1:
                wrong.append(f"appended draft {mid!r} is {len(found)} times in Drafts")
        client.logout()
    return wrong


def _queued(ctx: Context, proxy: Any, user: str) -> int:
    """Queued changes, read from the state dir as ``imapproxy status --json`` does."""
    for account in status_report.collect(proxy.process.state_dir):
        if account["user"] == user:
            return int(account["queued_changes"])
    return 0


def run(ctx: Context) -> None:
    changes = ctx.args.replay_changes
    for repeat in range(ctx.args.repeat):
        tag = f"{changes}-{ctx.rtt_ms:g}-{repeat}"
        user = seed_user(ctx.bench.dovecot, changes, name=f"replay{tag}")
        counter = CommandCounter()
        with Relay(ctx.upstream.host, ctx.upstream.port, tap=counter) as relay:
            proxy = ctx.start_proxy(f"replay-{tag}", via=(relay.host, relay.port))
            try:
                _one(ctx, proxy, relay, counter, user.name, user.password, tag, changes)
            finally:
                ctx.stop_proxy(proxy)


def _one(
    ctx: Context,
    proxy: Any,
    relay: Relay,
    counter: CommandCounter,
    user: str,
    password: str,
    tag: str,
    changes: int,
) -> None:
    with IMAPClient(proxy.process.host, port=proxy.process.port, ssl=False, timeout=120) as client:
        client.login(user, password)
        for folder in ("Archive/2024", "Drafts", "INBOX"):
            _message_ids(client, folder)
        relay.cut()
        began = time.monotonic()
        plan = make_changes(client, changes, tag)
        offline_s = time.monotonic() - began
        queued = _queued(ctx, proxy, user)
        log(f"{ctx.label} replay: {plan.changes} changes made offline in {offline_s:.1f}s,"
            f" {queued} queued")  # fmt: skip
        counter.reset()
        relay.reset_counters()
        relay.resume()
        resumed = time.monotonic()
        deadline = resumed + DRAIN_TIMEOUT
        left = queued
        while left:
            if time.monotonic() > deadline:
                ctx.problem(f"replay: {left} of {queued} changes still queued after "
                            f"{DRAIN_TIMEOUT:.0f}s")  # fmt: skip
                return
            time.sleep(0.05)
            left = _queued(ctx, proxy, user)
        drained = time.monotonic()
        commands = counter.snapshot()
        first = counter.first_at or drained
        bytes_up, bytes_down = relay.bytes_up, relay.bytes_down
        client.logout()
    for text in check_upstream(ctx, user, password, plan):
        ctx.problem(f"replay: {text}")
    total = sum(commands.values())
    ctx.record(
        "replay",
        changes=plan.changes,
        queued=queued,
        offline_s=offline_s,
        reconnect_s=first - resumed,
        drain_s=drained - first,
        total_s=drained - resumed,
        commands=total,
        by_command=commands,
        upstream_up=bytes_up,
        upstream_down=bytes_down,
    )
    top = ", ".join(f"{name} {n}" for name, n in sorted(commands.items(), key=lambda i: -i[1]))
    log(f"{ctx.label} replay: reconnect {first - resumed:.1f}s, drain {drained - first:.1f}s,"
        f" {total} upstream commands ({top})")  # fmt: skip


def report(outcome: Outcome) -> str:
    records = outcome.records.get("replay", [])
    if not records:
        return ""
    header = [
        "changes", "rtt ms", "queued", "reconnect s", "drain s", "upstream cmds",
        "cmds/change", "upstream up/down", "commands (median run)",
    ]  # fmt: skip
    body = []
    for (changes, rtt), items in sorted(group(records, "changes", "rtt_ms").items()):
        d = {k: median(r[k] for r in items) for k in
             ("queued", "reconnect_s", "drain_s", "commands", "upstream_up", "upstream_down")}  # fmt: skip
        middle = sorted(items, key=lambda r: r["commands"])[len(items) // 2]["by_command"]
        names = ", ".join(f"{k} {v}" for k, v in sorted(middle.items(), key=lambda i: -i[1]))
        body.append([
            str(changes),
            f"{rtt:g}",
            f"{d['queued']:.0f}",
            seconds(d["reconnect_s"]),
            seconds(d["drain_s"]),
            f"{d['commands']:.0f}",
            f"{d['commands'] / changes:.2f}",
            f"{human_bytes(d['upstream_up'])} / {human_bytes(d['upstream_down'])}",
            names,
        ])  # fmt: skip
    return (
        "Replay of changes queued offline, after the link returns (reconnect = resume to the "
        "first command of the replaying connection, the proxy's backoff; drain = that command "
        "to empty outbox; medians):\n\n" + table(header, body)
    )


register(Scenario("replay", "replay of changes queued offline", run, report, per_size=False))
