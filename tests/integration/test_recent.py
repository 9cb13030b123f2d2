"""\\Recent and keyword announcements through the proxy are what Dovecot gives directly.

A message is recent in exactly one session: the first to see it after it arrived
(RFC 3501 §2.3.2). The same sequence of sessions and deliveries runs against Dovecot
and through the proxy, for two users seeded alike; RECENT counts, which messages carry
\\Recent, and SEARCH RECENT/NEW/OLD must agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.integration.raw import RawClient, fetch_flags, flags_line, numbers, search_hits
from tests.support.corpus import Account, seed_standard_account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def new_user(dovecot: Dovecot) -> Account:
    user = f"user-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user, f"{user}-pw")
    return Account(user, f"{user}-pw", seed_standard_account(dovecot, user))


def _recent_of(lines: list[str]) -> set[int]:
    return {seq for seq, flags in fetch_flags(lines).items() if "\\Recent" in flags}


def _status_recent(client: RawClient) -> int:
    line = next(x for x in client.ok("STATUS INBOX (MESSAGES RECENT)") if "STATUS" in x)
    return int(line.split("RECENT ")[1].rstrip(")"))


def recent_story(
    host: str, port: int, account: Account, upstream: Callable[[str], None]
) -> list[Any]:
    """Three sessions, messages arriving upstream and through the server under test."""
    seen: list[Any] = []
    for i in range(3):
        upstream(f"before-{i}")
    with (
        RawClient(host, port, account.user, account.password) as a,
        RawClient(host, port, account.user, account.password) as b,
        RawClient(host, port, account.user, account.password) as x,
    ):
        seen.append(("status before", _status_recent(x)))
        examined = a.ok("EXAMINE INBOX")
        seen.append(("examine", numbers(examined, "RECENT")))
        seen.append(("examine flags", _recent_of(a.ok("FETCH 1:* (FLAGS)"))))
        selected = b.ok("SELECT INBOX")
        seen.append(("select b", numbers(selected, "RECENT")))
        seen.append(("b recent", search_hits(b.ok("SEARCH RECENT"))))
        seen.append(("b new", search_hits(b.ok("SEARCH NEW"))))
        seen.append(("b old", len(search_hits(b.ok("SEARCH OLD")))))
        seen.append(("select a", numbers(a.ok("SELECT INBOX"), "RECENT")))
        seen.append(("status after", _status_recent(x)))

        x.append("INBOX", "through")
        noop_a = a.ok("NOOP")
        seen.append(("a hears", numbers(noop_a, "EXISTS"), numbers(noop_a, "RECENT")))
        noop_b = b.ok("NOOP")
        seen.append(("b hears", numbers(noop_b, "EXISTS"), numbers(noop_b, "RECENT")))

        upstream("direct")
        noop_b = b.ok("NOOP")
        seen.append(("b hears direct", numbers(noop_b, "EXISTS"), numbers(noop_b, "RECENT")))
        a.ok("NOOP")
        seen.append(("a flags", _recent_of(a.ok("FETCH 1:* (FLAGS)"))))
        seen.append(("b flags", _recent_of(b.ok("FETCH 1:* (FLAGS)"))))
        b.ok("STORE 1:* -FLAGS.SILENT (\\Seen)")
        seen.append(("b new again", search_hits(b.ok("SEARCH NEW"))))
        seen.append(("a new", search_hits(a.ok("SEARCH NEW"))))
        # Mixed with a text key (which the proxy asks upstream): still this session's.
        seen.append(("b recent+text", search_hits(b.ok("SEARCH RECENT SUBJECT before"))))
        seen.append(("b old+text", search_hits(b.ok("SEARCH OLD SUBJECT direct"))))
    return seen


def test_recent_matches_dovecot_across_sessions(dovecot: Dovecot, proxy: ProxyProcess) -> None:
    def deliverer(account: Account) -> Callable[[str], None]:
        def deliver(subject: str) -> None:
            with RawClient(dovecot.host, dovecot.port, account.user, account.password) as c:
                c.append("INBOX", subject)

        return deliver

    direct_user, proxied_user = new_user(dovecot), new_user(dovecot)
    direct = recent_story(dovecot.host, dovecot.port, direct_user, deliverer(direct_user))
    proxied = recent_story(proxy.host, proxy.port, proxied_user, deliverer(proxied_user))
    assert proxied == direct
    # And the story is not vacuous: three recent at first, then claimed once.
    assert ("select b", [3]) in direct and ("select a", [0]) in direct


def test_new_keyword_is_announced_to_every_session_before_fetch_shows_it(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with (
        RawClient(proxy.host, proxy.port, user, password) as a,
        RawClient(proxy.host, proxy.port, user, password) as b,
    ):
        assert "$Project" not in (flags_line(a.ok("SELECT INBOX")) or set())
        b.ok("SELECT INBOX")
        # The storing session hears FLAGS first, then its FETCH.
        stored = b.ok("STORE 1 +FLAGS ($Project)")
        assert "$Project" in (flags_line(stored) or set())
        flags_at = next(i for i, line in enumerate(stored) if line.startswith("* FLAGS"))
        fetch_at = next(i for i, line in enumerate(stored) if "FETCH" in line)
        assert flags_at < fetch_at
        assert any("PERMANENTFLAGS" in line and "$Project" in line for line in stored)
        # A silent store of another new keyword: still announced.
        silent = b.ok("STORE 2 +FLAGS.SILENT ($Other)")
        assert "$Other" in (flags_line(silent) or set())
        assert not any("FETCH" in line for line in silent)
        # The other session: a FETCH before any NOOP must not show an unannounced keyword.
        fetched = a.ok("FETCH 1:2 (FLAGS)")
        announced = flags_line(fetched)
        assert announced is not None and {"$Project", "$Other"} <= announced
        flags_at = next(i for i, line in enumerate(fetched) if line.startswith("* FLAGS"))
        fetch_at = next(i for i, line in enumerate(fetched) if "FETCH" in line)
        assert flags_at < fetch_at
        # Told once: the next NOOP repeats nothing.
        assert flags_line(a.ok("NOOP")) is None


def test_keyword_from_upstream_is_announced_on_noop(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with RawClient(proxy.host, proxy.port, user, password) as a:
        a.ok("SELECT INBOX")
        with RawClient(dovecot.host, dovecot.port, user, password) as direct:
            direct.ok("SELECT INBOX")
            direct.ok("STORE 1 +FLAGS (Upstream-Kw)")
        lines = a.ok("NOOP")
        assert "Upstream-Kw" in (flags_line(lines) or set()), lines
        flags_at = next(i for i, line in enumerate(lines) if line.startswith("* FLAGS"))
        fetch_at = next(i for i, line in enumerate(lines) if "FETCH" in line)
        assert flags_at < fetch_at
