"""SORT, THREAD, ESORT, SEARCHRES and WITHIN through the proxy answer what Dovecot answers.

One mailbox (tests/support/sort_corpus.py) holds the cases that set implementations
apart; the same commands run directly against Dovecot and through the proxy, and the
answers (the SORT, THREAD and ESEARCH data, and the command status) must be equal.
Then the link is cut and the same commands must still give the same answers from the
replica alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.raw import RawClient, search_hits
from tests.support import sort_corpus
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

BOX = sort_corpus.MAILBOX

SORTS = [
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (DATE) UTF-8 ALL",
    "SORT (REVERSE DATE) UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE SUBJECT) UTF-8 ALL",
    "SORT (FROM) UTF-8 ALL",
    "SORT (TO) UTF-8 ALL",
    "SORT (CC) UTF-8 ALL",
    "SORT (SIZE) UTF-8 ALL",
    "SORT (REVERSE SIZE SUBJECT) UTF-8 ALL",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (DISPLAYTO) UTF-8 ALL",
    "SORT (SUBJECT DATE) UTF-8 ALL",
    "SORT (FROM REVERSE DATE) UTF-8 ALL",
    "SORT (SUBJECT) US-ASCII SINCE 4-Jan-2024",
    'SORT (DATE) UTF-8 SUBJECT "budget"',
    "SORT (SUBJECT) UTF-8 NOT FROM bob",
    "UID SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "UID SORT (SUBJECT REVERSE SIZE) UTF-8 5:20",
    "SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL",
    "SORT RETURN () (SUBJECT) UTF-8 ALL",
    "SORT RETURN (COUNT) (DATE) UTF-8 FROM alice",
    "UID SORT RETURN (ALL) (SIZE) UTF-8 1:10",
    "SORT RETURN (MIN MAX) (DATE) UTF-8 SUBJECT nothing-like-this",
    "SORT (SUBJECT) KOI8-R ALL",
    "SORT (NOSUCHKEY) UTF-8 ALL",
    "SORT (REVERSE) UTF-8 ALL",
]
THREADS = [
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
    "THREAD REFERENCES UTF-8 SINCE 6-Jan-2024",
    "THREAD REFERENCES US-ASCII NOT SUBJECT budget",
    "THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing-like-this",
    "THREAD REFERENCES UTF-8 3:12",
    "THREAD NOSUCH UTF-8 ALL",
]
#: Run in order on one connection: SEARCHRES state carries from one to the next.
SAVED = [
    "SEARCH RETURN (SAVE) FROM bob",
    "FETCH $ (UID RFC822.SIZE)",
    "UID FETCH $ (FLAGS)",
    "SEARCH $",
    "UID SEARCH UID $",
    "SEARCH RETURN (ALL) NOT $",
    "SORT (DATE) UTF-8 $",
    "SEARCH RETURN (SAVE MIN MAX) SUBJECT lunch",
    "SEARCH $",
    "UID SEARCH RETURN (SAVE) SINCE 9-Jan-2024",
    "THREAD REFERENCES UTF-8 $",
    "SORT RETURN (SAVE) (SUBJECT) UTF-8 FROM alice",
    "SEARCH RETURN (COUNT) $",
    "SEARCH RETURN (SAVE COUNT) SUBJECT nothing-like-this",
    "FETCH $ (UID)",
    "SEARCH YOUNGER 86400",
    "SEARCH OLDER 86400",
    "SEARCH RETURN (COUNT) OLDER 3600",
    "UID SEARCH YOUNGER 1000000000",
]
_DATA = re.compile(r"^\* (SORT|THREAD|ESEARCH|SEARCH|\d+ FETCH)\b(.*)$")


@pytest.fixture(scope="module")
def sorting_user(dovecot: Dovecot) -> tuple[str, str]:
    user = f"sort-{uuid.uuid4().hex[:8]}"
    password = f"{user}-pw"
    dovecot.add_user(user, password)
    sort_corpus.seed(dovecot.mail_root(user))
    with RawClient(dovecot.host, dovecot.port, user, password) as client:
        client.ok(f'SELECT "{BOX}"')  # index it now, and take \Recent away
    return user, password


@pytest.fixture(scope="module")
def linked_proxy(
    dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    state: Path = tmp_path_factory.mktemp("sort-proxy") / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        proxy = ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", state)
        proxy.relay = relay
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()


def _answer(client: RawClient, command: str) -> tuple[str, list[str]]:
    """(status, the data lines with the tag and blanks normalised)."""
    untagged, tagged = client.command(command)
    data = []
    for line in untagged:
        match = _DATA.match(line)
        if match is not None:
            text = re.sub(r'\(TAG "[^"]*"\)', "(TAG)", match.group(2))
            data.append(f"{match.group(1)} {' '.join(text.split())}")
    return tagged.split()[0], data


def _answers(host: str, port: int, user: tuple[str, str], commands: list[str]) -> list[object]:
    with RawClient(host, port, *user) as client:
        client.ok(f'EXAMINE "{BOX}"')
        return [(command, *_answer(client, command)) for command in commands]


def _compare(
    dovecot: Dovecot, proxy: ProxyProcess, user: tuple[str, str], commands: list[str]
) -> None:
    direct = _answers(dovecot.host, dovecot.port, user, commands)
    through = _answers(proxy.host, proxy.port, user, commands)
    assert [d for d in direct if d[1] == "OK" and d[2]], "Dovecot answered nothing"
    assert [(t, d) for t, d in zip(through, direct, strict=True) if t != d] == []


def test_sort_answers_like_dovecot(
    dovecot: Dovecot, linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    _compare(dovecot, linked_proxy, sorting_user, SORTS)


def test_thread_answers_like_dovecot(
    dovecot: Dovecot, linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    _compare(dovecot, linked_proxy, sorting_user, THREADS)


def test_saved_results_and_within_answer_like_dovecot(
    dovecot: Dovecot, linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    _compare(dovecot, linked_proxy, sorting_user, SAVED)


def test_offline_answers_are_the_same(
    dovecot: Dovecot, linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    """With the link cut, the replica alone gives the same orders and threads (text
    criteria excepted: those need the upstream or cached bodies)."""
    offline = [
        c
        for c in SORTS + THREADS + SAVED
        if not re.search(r"SUBJECT \"?[a-z]|FROM |KOI8|NOSUCH|\(REVERSE\)", c)
    ]
    direct = _answers(dovecot.host, dovecot.port, sorting_user, offline)
    assert linked_proxy.relay is not None
    with RawClient(linked_proxy.host, linked_proxy.port, *sorting_user) as client:
        client.ok(f'EXAMINE "{BOX}"')
        _, done = client.command("SORT (DATE) UTF-8 ALL")  # online: every header cached
        assert done == "OK SORT completed", done
    linked_proxy.relay.cut()
    try:
        through = _answers(linked_proxy.host, linked_proxy.port, sorting_user, offline)
    finally:
        linked_proxy.relay.resume()
    assert [t for t, d in zip(through, direct, strict=True) if t != d] == []


def test_capabilities_name_the_extensions(
    linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    with RawClient(linked_proxy.host, linked_proxy.port, *sorting_user) as client:
        caps = " ".join(client.ok("CAPABILITY")).split()
    for name in (
        "SORT",
        "SORT=DISPLAY",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
        "ESORT",
        "SEARCHRES",
        "WITHIN",
    ):
        assert name in caps
    assert "CONTEXT=SORT" not in caps


def test_saved_result_drives_store_copy_move_and_resets(
    linked_proxy: ProxyProcess, sorting_user: tuple[str, str]
) -> None:
    """RFC 5182 §2.1-2.2: ``$`` in STORE, COPY, MOVE and UID EXPUNGE; a failed SAVE
    empties it, a BAD one leaves it, and SELECT resets it."""
    with RawClient(linked_proxy.host, linked_proxy.port, *sorting_user) as client:
        for name in ("Saves", "Saves/copies", "Saves/moved"):
            client.ok(f'CREATE "{name}"')
        for n in range(6):
            client.append("Saves", f"keep {n}" if n % 2 else f"move {n}")
        client.ok('SELECT "Saves"')
        client.ok("SEARCH RETURN (SAVE) SUBJECT move")
        client.ok("STORE $ +FLAGS.SILENT (\\Flagged)")
        assert search_hits(client.ok("SEARCH FLAGGED")) == [1, 3, 5]
        client.ok('COPY $ "Saves/copies"')
        _, status = client.command("SEARCH RETURN (SAVE) NOSUCHKEY")
        assert status.startswith("BAD")
        assert search_hits(client.ok("SEARCH $")) == [1, 3, 5]
        client.ok('MOVE $ "Saves/moved"')
        assert search_hits(client.ok("SEARCH ALL")) == [1, 2, 3]
        assert search_hits(client.ok("SEARCH $")) == []  # moved away: gone from $
        client.ok("UID SEARCH RETURN (SAVE) SUBJECT keep")
        client.ok("STORE $ +FLAGS.SILENT (\\Deleted)")
        client.ok("UID EXPUNGE $")
        assert search_hits(client.ok("SEARCH ALL")) == []
        client.ok('SELECT "Saves/copies"')
        assert search_hits(client.ok("SEARCH $")) == []  # SELECT reset it
        client.ok("SEARCH RETURN (SAVE) ALL")
        _, status = client.command("SEARCH RETURN (SAVE) CHARSET X-NO-SUCH-CHARSET ALL")
        assert status.startswith("NO")
        assert search_hits(client.ok("SEARCH $")) == []  # a NO empties it
        counts = client.ok('STATUS "Saves/moved" (MESSAGES)') + client.ok(
            'STATUS "Saves/copies" (MESSAGES)'
        )
    assert [c for c in counts if "MESSAGES 3" in c] == counts
