"""Resync uses the best the upstream offers, with the same result each way (issue 6).

One Dovecot per variant, each announcing a different CAPABILITY (``imap_capability``):
QRESYNC and CONDSTORE, CONDSTORE only, neither. For each, a mailbox is synced through
the real ``imapproxy serve``; then, straight on Dovecot, messages arrive, flags change
on old messages and messages are expunged, in the middle of the UID range as well as
at its ends; the proxy's view (count, flags, message identity by Message-ID) must then
equal a direct view. A relay between the proxy and Dovecot records every command the
proxy sends, which proves how the proxy resynced: ``EXAMINE … (QRESYNC (…))`` and no
UID SEARCH or CHANGEDSINCE where QRESYNC is offered (ENABLE QRESYNC at most once per
connection, only on the one that selects); CHANGEDSINCE and no QRESYNC with CONDSTORE
only; a plain FLAGS listing and neither with nothing.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from imapclient import IMAPClient

from tests.integration.clients import imap, without_recent
from tests.support.corpus import Account, open_mailboxes
from tests.support.dovecot import Dovecot
from tests.support.maildir import seed_mailbox
from tests.support.proxy import ProxyProcess
from tests.support.relay import CommandLog, Relay

SEEDED = 80
VARIANTS = {
    "qresync": (),
    "condstore": ("QRESYNC",),
    "neither": ("QRESYNC", "CONDSTORE"),
}
#: How long the proxy may take to show upstream changes (NOTIFY, then a resync).
CONVERGE_SECONDS = 15.0
_MSGID = re.compile(rb"Message-ID: <([^>]+)>", re.IGNORECASE)


def _message(n: int, tag: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: message {n}\r\n"
        f"Message-ID: <{tag}-{n}@example.org>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
        f"\r\nBody of message {n}.\r\n"
    ).encode()


@dataclass
class Variant:
    name: str
    dovecot: Dovecot
    relay: Relay
    commands: CommandLog
    proxy: ProxyProcess
    account: Account


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Variant]:
    """A Dovecot announcing one variant's CAPABILITY, an account with SEEDED messages in
    INBOX, and a proxy in front of it through a recording relay."""
    name = request.param
    commands = CommandLog()
    state = tmp_path_factory.mktemp(f"resync-{name}")
    with Dovecot(without_capabilities=VARIANTS[name]) as dovecot:
        user = f"user-{uuid.uuid4().hex[:8]}"
        dovecot.add_user(user, f"{user}-pw")
        seed_mailbox(
            dovecot.mail_root(user),
            "INBOX",
            [_message(n, "seed") for n in range(SEEDED)],
            ["\\Seen" if n % 3 else "" for n in range(SEEDED)],
        )
        open_mailboxes(dovecot, user, ["INBOX"])
        with (
            Relay(dovecot.host, dovecot.port, tap=commands.tap) as relay,
            ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", state / "proxy") as proxy,
        ):
            yield Variant(name, dovecot, relay, commands, proxy, Account(user, f"{user}-pw", {}))


def _view(client: IMAPClient) -> dict[bytes, frozenset[bytes]]:
    """INBOX as a client relies on it: Message-ID -> flags (without \\Recent)."""
    client.select_folder("INBOX", readonly=True)
    fetched = client.fetch(
        client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
    )
    view = {}
    for item in fetched.values():
        match = _MSGID.search(item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
        assert match, item
        view[match.group(1)] = frozenset(without_recent(item[b"FLAGS"]))
    assert len(view) == len(fetched), "a Message-ID twice"
    return view


def _direct(variant: Variant) -> dict[bytes, frozenset[bytes]]:
    with imap(variant.dovecot.host, variant.dovecot.port, variant.account) as client:
        return _view(client)


def _converged(variant: Variant) -> dict[bytes, frozenset[bytes]]:
    """The proxy's view once it equals the direct one (news arrives within seconds)."""
    direct = _direct(variant)
    deadline = time.monotonic() + CONVERGE_SECONDS
    with imap(variant.proxy.host, variant.proxy.port, variant.account) as client:
        while True:
            through = _view(client)
            if through == direct or time.monotonic() > deadline:
                return through
            client.noop()
            time.sleep(0.2)


def _change_upstream(variant: Variant, round_: int) -> None:
    """Straight on Dovecot: expunge in the middle and at both ends of the UID range,
    change flags on old messages (set and clear, a keyword), deliver new ones."""
    with imap(variant.dovecot.host, variant.dovecot.port, variant.account) as client:
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        middle = len(uids) // 2
        gone = [uids[0], uids[middle], uids[middle + 1], uids[middle + 5], uids[-1]]
        client.add_flags(gone, [b"\\Deleted"])
        client.uid_expunge(gone)
        left = [u for u in uids if u not in gone]
        client.add_flags(left[1:4], [b"\\Flagged", f"$round{round_}".encode()])
        client.remove_flags(left[10:12], [b"\\Seen"])
        client.add_flags(left[20:22], [b"\\Seen", b"\\Answered"])
        for n in range(3):
            client.append("INBOX", _message(n, f"new{round_}"), flags=[b"\\Seen"] if n else [])


def test_a_resync_costs_what_the_upstream_offers_and_gives_the_same_replica(
    variant: Variant,
) -> None:
    # First sync through the proxy: the replica holds INBOX, with modseqs where offered.
    assert _converged(variant) == _direct(variant)
    for round_ in (1, 2):  # the second resync starts from the modseq the first one kept
        mark = variant.commands.mark()
        _change_upstream(variant, round_)
        direct = _direct(variant)
        assert len(direct) == SEEDED + round_ * (3 - 5)
        assert _converged(variant) == direct, f"round {round_}"
        _check_commands(variant, variant.commands.since(mark))
    _check_enable(variant)


def _check_commands(variant: Variant, sent: list[str]) -> None:

    examine_qresync = [c for c in sent if re.match(r"(EXAMINE|SELECT) .*\(QRESYNC \(", c)]
    changedsince = [c for c in sent if "CHANGEDSINCE" in c]
    searches = [c for c in sent if c.startswith("UID SEARCH")]
    flag_listing = [c for c in sent if re.match(r"UID FETCH 1:\d+ \(UID FLAGS\)$", c)]
    if variant.name == "qresync":
        assert examine_qresync, sent
        # The known UID range, "(QRESYNC (validity modseq 1:n))"; no sequence match
        # data: Dovecot remembers its expunges, so it would not pay.
        assert all(re.search(r"\(QRESYNC \(\d+ \d+ 1:\d+\)\)$", c) for c in examine_qresync), (
            examine_qresync
        )
        assert not changedsince and not searches and not flag_listing, sent
    elif variant.name == "condstore":
        assert changedsince, sent
        assert not examine_qresync and not any("QRESYNC" in c for c in sent), sent
        assert not flag_listing, sent
    else:
        assert flag_listing, sent
        assert not any("QRESYNC" in c or "CONDSTORE" in c or "CHANGEDSINCE" in c for c in sent), (
            sent
        )


def _check_enable(variant: Variant) -> None:
    """ENABLE QRESYNC: only where offered, once per connection, pipelined right in
    front of that connection's first SELECT/EXAMINE; the watcher, which never
    selects, never enables."""
    enabled = 0
    for lines in variant.commands.per_connection():
        enables = [i for i, c in enumerate(lines) if c.startswith("ENABLE")]
        selects = [i for i, c in enumerate(lines) if re.match(r"(SELECT|EXAMINE) ", c)]
        if variant.name != "qresync" or not selects:
            assert not enables, lines
            continue
        assert len(enables) == 1 and lines[enables[0]] == "ENABLE QRESYNC", lines
        assert enables[0] + 1 == selects[0], lines
        enabled += 1
    if variant.name == "qresync":
        assert enabled >= 1
