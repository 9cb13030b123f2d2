"""A stalled link (packets held, no RST, like a dead Wi-Fi) is noticed in seconds: the
client's commands are answered from the replica meanwhile, and the proxy comes back by
itself when the link does."""

from __future__ import annotations

import imaplib
import re
import threading
import time

import pytest

from imapproxy.server.handlers.search import CLIENT_SEARCH_SECONDS
from imapproxy.upstream.connection import STALL_SECONDS
from tests.integration.clients import imap
from tests.integration.conftest import ProxyFactory
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot

#: What a client command may take while the link is stalled (the old figure was 45 s):
#: leaving IDLE must be answered within 4 s, and a command of its own that the link was
#: already running when it stalled fails after STALL_SECONDS of silence (the link may be
#: between two operations when the stall begins), plus a second for a loaded machine.
ANSWER_WITHIN = STALL_SECONDS + 1.0
#: How long the proxy may take to come back after the link does (attempts that hung
#: on the stalled link time out, then backoff).
RECOVER_WITHIN = 45.0


def _timed(what: str, call: object, within: float = ANSWER_WITHIN) -> tuple[str, list]:
    start = time.monotonic()
    typ, data = call()  # type: ignore[operator]
    elapsed = time.monotonic() - start
    assert elapsed < within, f"{what} took {elapsed:.1f} s on a stalled link"
    print(f"stalled link: {what} answered in {elapsed:.2f} s")
    return typ, data


def _told(client: imaplib.IMAP4) -> int:
    """The message count the selected session was last told (its latest EXISTS)."""
    exists = client.untagged_responses.get("EXISTS") or [b"0"]
    return int(exists[-1])


def _messages(client: imaplib.IMAP4, mailbox: str) -> int:
    typ, data = client.status(mailbox, "(MESSAGES)")
    assert typ == "OK", data
    found = re.search(rb"MESSAGES (\d+)", data[0])
    assert found, data
    return int(found.group(1))


@pytest.mark.timeout(120)
def test_stalled_link_answers_from_the_replica_then_recovers(
    dovecot: Dovecot, make_proxy: ProxyFactory, fresh_user: Account
) -> None:
    proxy = make_proxy()
    relay = proxy.relay
    assert relay is not None
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=60)
    try:
        client.login(fresh_user.user, fresh_user.password)
        typ, _ = client.select("INBOX")
        assert typ == "OK"
        typ, cached = client.fetch("1:3", "(BODY.PEEK[] ENVELOPE)")
        assert typ == "OK"
        before = _messages(client, "INBOX")
        time.sleep(1.0)  # the link is IDLEing upstream on INBOX now

        relay.stall()
        typ, _ = _timed("NOOP", client.noop)
        assert typ == "OK"
        typ, again = _timed("FETCH", lambda: client.fetch("1:3", "(BODY.PEEK[] ENVELOPE)"))
        assert typ == "OK" and again == cached
        typ, data = _timed("STATUS", lambda: client.status("INBOX", "(MESSAGES UNSEEN)"))
        assert typ == "OK" and b"MESSAGES %d" % before in data[0], data
        typ, _ = _timed("second NOOP", client.noop)
        assert typ == "OK"
        assert proxy.running

        # New mail reaches the upstream while the proxy cannot see it.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.append("INBOX", b"Subject: after the stall\r\n\r\nhello\r\n")
        relay.unstall()
        unstalled = time.monotonic()
        deadline = unstalled + RECOVER_WITHIN
        while _messages(client, "INBOX") != before + 1:
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.5)
        print(f"stalled link: new mail seen {time.monotonic() - unstalled:.1f} s after unstall")
        # STATUS counts the replica; the selected session is told at a command of its
        # own, and a client names only the sequence numbers it was told of.
        client.noop()
        while _told(client) < before + 1:
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.2)
            client.noop()
        typ, data = client.fetch(str(before + 1), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"after the stall" in data[0][1], data
    finally:
        client.logout()
    assert proxy.running
    assert "Traceback" not in proxy.log_text(), proxy.log_tail()


#: What a client command may wait behind another operation holding a stalled link:
#: the default --write-wait (3 s) plus room for a loaded machine.
BEHIND_WITHIN = 5.0


@pytest.mark.timeout(90)
def test_command_behind_a_stalled_slow_command_waits_only_briefly(
    dovecot: Dovecot, make_proxy: ProxyFactory, fresh_user: Account
) -> None:
    """The link stalls under a slow command (a SEARCH over bodies, which the proxy
    lets run for 30 s of silence): another client's commands wait behind it only a few
    seconds, then the replica answers, and a change is applied and queued."""
    proxy = make_proxy()
    relay = proxy.relay
    assert relay is not None
    searcher = imaplib.IMAP4(proxy.host, proxy.port, timeout=60)
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=60)
    try:
        for c in (searcher, client):
            c.login(fresh_user.user, fresh_user.password)
            typ, _ = c.select("INBOX")
            assert typ == "OK"
        typ, cached = client.fetch("1:3", "(FLAGS ENVELOPE)")
        assert typ == "OK"
        relay.stall_on(rb"UID SEARCH")
        outcome: list[object] = []
        search = threading.Thread(
            target=lambda: outcome.append(searcher.search(None, "BODY", '"not in any message"'))
        )
        search_started = time.monotonic()
        search.start()
        deadline = time.monotonic() + 10
        while not relay.stalled:
            assert time.monotonic() < deadline, "the SEARCH never went upstream"
            time.sleep(0.05)

        typ, _ = _timed("NOOP behind a stalled SEARCH", client.noop, BEHIND_WITHIN)
        assert typ == "OK"
        typ, again = _timed(
            "FETCH behind a stalled SEARCH", lambda: client.fetch("1:3", "(FLAGS ENVELOPE)"),
            BEHIND_WITHIN,
        )  # fmt: skip
        assert typ == "OK" and again == cached
        typ, data = _timed(
            "STORE behind a stalled SEARCH",
            lambda: client.store("1", "+FLAGS", "($Behind)"),
            BEHIND_WITHIN,
        )
        assert typ == "OK" and b"$Behind" in data[0], data
        # The searcher itself hears back within its bound, still stalled: the replica
        # answers it (no body cached here, so nothing matches), saying why.
        search.join(timeout=CLIENT_SEARCH_SECONDS + 5)
        searched_in = time.monotonic() - search_started
        assert not search.is_alive(), "the SEARCH waited on the stalled link"
        assert searched_in < CLIENT_SEARCH_SECONDS + 3, searched_in
        assert outcome and outcome[0][0] == "OK", outcome  # type: ignore[index]
        relay.unstall()
        # The change queued behind the stall reaches the upstream once the link is back.
        deadline = time.monotonic() + RECOVER_WITHIN
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            while True:
                direct.select_folder("INBOX", readonly=True)
                if b"$Behind" in direct.get_flags([direct.search(["ALL"])[0]]).popitem()[1]:
                    break
                assert time.monotonic() < deadline, proxy.log_tail()
                client.noop()
                time.sleep(0.5)
    finally:
        relay.unstall()
        for c in (searcher, client):
            try:
                c.logout()
            except Exception:
                pass
    assert proxy.running
    assert "Traceback" not in proxy.log_text(), proxy.log_tail()
