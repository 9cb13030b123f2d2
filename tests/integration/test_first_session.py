"""A first session costs no more upstream work than the client's own commands need
(issue 6): the message list a SELECT brings in carries each message's ENVELOPE and
BODYSTRUCTURE, so the header FETCH a client sends next is answered from the replica,
with no second pass over the list; and a client's STATUS of its first folder brings in
the other folders never synced in the same round trip."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.integration.clients import imap
from tests.support.corpus import Account, make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import CommandLog, Relay

MESSAGES = 60
#: Folders besides INBOX, with their sizes: one larger than the part of a folder's list
#: that comes along with another folder's first sync (NEW_FOLDER_UIDS, 200).
FOLDERS = {"Work": 5, "Lists/python": 12, "Empty": 0, "Big": 230}
HEADER_ITEMS = ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]
LARGE_INBOX = 2600


@pytest.fixture
def recorded(dovecot: Dovecot, tmp_path: Path) -> Iterator[tuple[Account, CommandLog, int]]:
    """A fresh account, and a proxy whose upstream commands are recorded."""
    yield from _recorded(dovecot, tmp_path)


@pytest.fixture
def recorded_alone(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Account, CommandLog, int]]:
    """``recorded``, with the background sync off: the client's commands alone."""
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")
    yield from _recorded(dovecot, tmp_path)


def _recorded(dovecot: Dovecot, tmp_path: Path) -> Iterator[tuple[Account, CommandLog, int]]:
    user = f"first-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, f"{user}-pw")
    seed_messages(dovecot.mail_root(user), "INBOX", make_messages(MESSAGES, seed=7))
    for n, (folder, count) in enumerate(FOLDERS.items()):
        seed_messages(dovecot.mail_root(user), folder, make_messages(count, seed=20 + n))
    open_mailboxes(dovecot, user, ["INBOX", *FOLDERS])
    commands = CommandLog()
    with (
        Relay(dovecot.host, dovecot.port, tap=commands.tap) as relay,
        ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", tmp_path / "state") as proxy,
    ):
        yield Account(user, f"{user}-pw", {}), commands, proxy.port


def test_the_header_fetch_after_a_first_select_needs_no_second_pass(
    dovecot: Dovecot, recorded: tuple[Account, CommandLog, int]
) -> None:
    account, commands, port = recorded
    with imap("127.0.0.1", port, account) as client:
        client.select_folder("INBOX", readonly=True)
        mark = commands.mark()
        through = client.fetch(client.search("ALL"), HEADER_ITEMS)
    # (The background may meanwhile list other folders: a message list, with INTERNALDATE.)
    second_pass = [
        c
        for c in commands.since(mark)
        if ("ENVELOPE" in c or "BODYSTRUCTURE" in c) and "INTERNALDATE" not in c
    ]
    assert second_pass == [], second_pass
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.select_folder("INBOX", readonly=True)
        expected = direct.fetch(direct.search("ALL"), HEADER_ITEMS)
    assert len(through) == MESSAGES
    for uid, item in expected.items():
        for name in (b"ENVELOPE", b"BODYSTRUCTURE", b"RFC822.SIZE", b"INTERNALDATE"):
            assert through[uid][name] == item[name], (uid, name)


def test_a_client_reading_one_message_after_another_has_the_link_to_itself(
    dovecot: Dovecot, recorded: tuple[Account, CommandLog, int], tmp_path: Path
) -> None:
    """The background pass (on here) takes the link only once the client left it alone
    for a moment: its STATUS, LIST or header batch between two of a client's body reads
    cost that read a round trip, and another to open INBOX again (a cold session's 50
    reads at 50 ms took 4.9 s instead of 2.6 s)."""
    account, commands, port = recorded
    with imap("127.0.0.1", port, account) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        client.fetch(uids, HEADER_ITEMS)
        first = commands.mark()
        for uid in uids:
            client.fetch([uid], ["BODY.PEEK[]"])
        between = commands.since(first)
        reads = [c for c in between if re.fullmatch(r"UID FETCH \d+ \(UID BODY\.PEEK\[\]\)", c)]
        assert len(reads) == MESSAGES, between
        # What went up from the first read's command to the last's: those reads alone.
        last = max(i for i, c in enumerate(between) if c in reads)
        start = min(i for i, c in enumerate(between) if c in reads)
        assert between[start : last + 1] == reads, between[start : last + 1]
        # And the pass does run once the client pauses.
        log = tmp_path / "state.proxy.log"
        for _ in range(100):  # 10 s at most
            if "background sync complete" in log.read_text():
                break
            time.sleep(0.1)
        assert "background sync complete" in log.read_text()


def _status(client: IMAPClient, folders: list[str]) -> dict[str, dict[bytes, int]]:
    return {f: client.folder_status(f, ["MESSAGES", "UNSEEN"]) for f in folders}


def test_the_first_status_brings_in_every_new_folder_in_one_round_trip(
    dovecot: Dovecot, recorded: tuple[Account, CommandLog, int]
) -> None:
    account, commands, port = recorded
    folders = ["INBOX", *FOLDERS]
    with imap("127.0.0.1", port, account) as client:
        through = _status(client, folders)
    with imap(dovecot.host, dovecot.port, account) as direct:
        assert through == _status(direct, folders)
        direct.select_folder("Big", readonly=True)
        big = sorted(direct.fetch(direct.search("ALL"), ["INTERNALDATE"]).items())
    # One write carried every folder's EXAMINE with its message list behind it (and
    # those of the folders Dovecot creates for every user).
    chunk = max(commands.chunks, key=lambda c: sum(x.startswith("EXAMINE ") for x in c))
    for folder in folders:
        assert f'EXAMINE "{folder}" (CONDSTORE)' in chunk, chunk
    examined = sum(c.startswith("EXAMINE ") for c in chunk)
    # Each folder's list was fetched once: Big's first 200 with the others, the rest
    # when its own STATUS came (its EXAMINE then without a FETCH of the first part).
    firsts = [c for c in commands.since(0) if re.match(r"UID FETCH 1:\d+ .*INTERNALDATE", c)]
    assert len(firsts) == examined, firsts
    assert [c for c in commands.since(0) if c.startswith("UID FETCH 201:*")] != []
    with imap("127.0.0.1", port, account) as client:
        client.select_folder("Big", readonly=True)
        mine = sorted(client.fetch(client.search("ALL"), ["INTERNALDATE"]).items())
    assert [v[b"INTERNALDATE"] for _, v in mine] == [v[b"INTERNALDATE"] for _, v in big]


def test_a_folder_the_first_look_left_unfinished_goes_on_without_being_asked(
    dovecot: Dovecot, recorded_alone: tuple[Account, CommandLog, int]
) -> None:
    """The STATUS of one folder brings the first 200 messages of Big with it; the rest
    of Big's list follows at once, not when a client asks for Big (with the background
    sync off, nothing else would fetch it). The client opening one folder of a new
    account opens the others next: in a cold session at 50 ms, a 10,000-message INBOX's
    sync started 0.15 s after the look had come, behind two other folders' EXAMINEs."""
    account, commands, port = recorded_alone
    with imap("127.0.0.1", port, account) as client:
        client.folder_status("Work", ["MESSAGES"])

        def rest_of_big() -> bool:
            return any(c.startswith("UID FETCH 201:*") for c in commands.since(0))

        for _ in range(100):  # 10 s at most
            if rest_of_big():
                break
            time.sleep(0.1)
        assert rest_of_big(), commands.since(0)
        mark = commands.mark()
        through = client.folder_status("Big", ["MESSAGES", "UNSEEN"])
        # Synced, and NOTIFY covers it (the watcher's connection is another): nothing
        # more goes upstream on the link for Big's STATUS.
        asked = [c for c in commands.since(mark) if "Big" in c and not c.startswith("NOTIFY")]
        assert asked == [], asked
    with imap(dovecot.host, dovecot.port, account) as direct:
        assert through == direct.folder_status("Big", ["MESSAGES", "UNSEEN"])


@pytest.fixture
def large_inbox(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Account, CommandLog, int]]:
    """An INBOX larger than the part of it a first look fetches (PIPELINED_FIRST_UIDS,
    1,000) and than a first sync's batch (FIRST_SYNC_BATCH, 2,500), a small folder
    beside it; the background sync off."""
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")
    user = f"large-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, f"{user}-pw")
    seed_messages(dovecot.mail_root(user), "INBOX", make_messages(LARGE_INBOX, seed=11))
    seed_messages(dovecot.mail_root(user), "Work", make_messages(5, seed=12))
    open_mailboxes(dovecot, user, ["INBOX", "Work"])
    commands = CommandLog()
    with (
        Relay(dovecot.host, dovecot.port, tap=commands.tap) as relay,
        ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", tmp_path / "state") as proxy,
    ):
        yield Account(user, f"{user}-pw", {}), commands, proxy.port


@pytest.mark.parametrize("asked_first", ["Work", "INBOX"])
def test_the_rest_of_a_large_inbox_goes_on_from_the_first_look_without_a_second_examine(
    dovecot: Dovecot, large_inbox: tuple[Account, CommandLog, int], asked_first: str
) -> None:
    """The first look examines INBOX last, whichever folder the client asked for, and
    the connection stays on it: the rest of its list is fetched from there. A second
    EXAMINE cost a cold 10,000-message session at 50 ms a round trip."""
    account, commands, port = large_inbox
    rest = f"FETCH 1001:{LARGE_INBOX} "  # by number, from the look's EXISTS
    with imap("127.0.0.1", port, account) as client:
        through = _status(client, [asked_first])
        for _ in range(100):  # 10 s at most: the rest goes on after the look, unasked
            if any(c.startswith(rest) for c in commands.since(0)):
                break
            time.sleep(0.1)
        through.update(_status(client, ["INBOX", "Work"]))
        client.select_folder("INBOX", readonly=True)
        listed = client.fetch(client.search("ALL"), ["RFC822.SIZE"])
    sent = commands.since(0)
    look = max(commands.chunks, key=lambda c: sum(x.startswith("EXAMINE ") for x in c))
    examines = [c for c in look if c.startswith("EXAMINE ")]
    assert examines[-1] == 'EXAMINE "INBOX" (CONDSTORE)', look
    # Once in the look, and never again: not before the rest, nor after it when
    # NOTIFY's cover came while the first batches were being stored.
    assert [c for c in sent if c.startswith('EXAMINE "INBOX"')] == [examines[-1]], sent
    assert [c for c in sent if c.startswith(rest)] != [], sent
    with imap(dovecot.host, dovecot.port, account) as direct:
        assert through == _status(direct, ["INBOX", "Work", asked_first])
        direct.select_folder("INBOX", readonly=True)
        expected = direct.fetch(direct.search("ALL"), ["RFC822.SIZE"])
    assert len(listed) == LARGE_INBOX
    assert sorted(v[b"RFC822.SIZE"] for v in listed.values()) == sorted(
        v[b"RFC822.SIZE"] for v in expected.values()
    )
