"""CONDSTORE and QRESYNC (RFC 7162) through the proxy, on its own modseqs.

Equality: the same changes (flags set and cleared, messages expunged and delivered,
directly on Dovecot and through the proxy) are seen by a client resyncing directly
and by one resyncing through the proxy — compared as a client relies on them (which
messages changed, their flags, which vanished; by Message-ID), never raw modseqs or
UIDs, which are each server's own. Offline: a client reconnecting to the proxy while
the upstream is away gets exactly the changes made meanwhile, and nothing twice
after the queue drains.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from tests.integration.clients import caught_up
from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

_FETCH = re.compile(r"\* (\d+) FETCH \((.*)\)$", re.DOTALL)
_MSGID = re.compile(r"Message-ID: <([^>]+)>", re.IGNORECASE)


def _uid(item: str) -> int:
    match = re.search(r"\bUID (\d+)", item)
    assert match, item
    return int(match.group(1))


def _flags(item: str) -> frozenset[str]:
    match = re.search(r"\bFLAGS \(([^)]*)\)", item)
    assert match, item
    return frozenset(f for f in match.group(1).split() if f != "\\Recent")


def _modseq(item: str) -> int:
    match = re.search(r"\bMODSEQ \((\d+)\)", item)
    assert match, item
    return int(match.group(1))


def _fetches(lines: list[str]) -> list[str]:
    return [m.group(2) for line in lines if (m := _FETCH.match(line))]


def _expand(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _vanished(lines: list[str], earlier: bool = True) -> set[int]:
    prefix = "* VANISHED (EARLIER) " if earlier else "* VANISHED "
    out: set[int] = set()
    for line in lines:
        if line.startswith(prefix) and (earlier or "(EARLIER)" not in line):
            out |= _expand(line[len(prefix) :])
    return out


def _code(lines: list[str], name: str) -> int:
    for line in lines:
        match = re.search(rf"\[{name} (\d+)\]", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no {name} in {lines}")


def message_ids(client: RawClient) -> dict[int, str]:
    lines = client.ok("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    out = {}
    for item in _fetches(lines):
        match = _MSGID.search(item)
        assert match, item
        out[_uid(item)] = match.group(1)
    return out


@dataclass
class Known:
    """What a client remembers of INBOX between sessions."""

    validity: int
    modseq: int
    ids: dict[int, str]


def remember(host: str, port: int, account: Account) -> Known:
    with RawClient(host, port, account.user, account.password) as client:
        client.ok("ENABLE QRESYNC")
        selected = client.ok("SELECT INBOX")
        ids = message_ids(client)
        return Known(_code(selected, "UIDVALIDITY"), _code(selected, "HIGHESTMODSEQ"), ids)


@dataclass
class Resync:
    vanished: set[str]
    changed: dict[str, frozenset[str]]


def qresync(host: str, port: int, account: Account, known: Known) -> tuple[Resync, Known]:
    """SELECT (QRESYNC …) as a client that was away does it, by Message-ID."""
    with RawClient(host, port, account.user, account.password) as client:
        client.ok("ENABLE QRESYNC")
        lines = client.ok(f"SELECT INBOX (QRESYNC ({known.validity} {known.modseq}))")
        ids = message_ids(client)
        gone = {known.ids[uid] for uid in _vanished(lines) if uid in known.ids}
        changed = {ids[_uid(item)]: _flags(item) for item in _fetches(lines)}
        after = Known(known.validity, _code(lines, "HIGHESTMODSEQ"), ids)
        return Resync(gone, changed), after


def changedsince(host: str, port: int, account: Account, known: Known) -> Resync:
    """A CONDSTORE-only client: SELECT (CONDSTORE), CHANGEDSINCE, and UID SEARCH for
    what is left (RFC 7162 §3.2.6 example 1; RFC 4549 §6.1)."""
    with RawClient(host, port, account.user, account.password) as client:
        client.ok("SELECT INBOX (CONDSTORE)")
        ids = message_ids(client)
        lines = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known.modseq})")
        changed = {ids[_uid(item)]: _flags(item) for item in _fetches(lines)}
        search = client.ok("UID SEARCH ALL")[0]
        present = {int(n) for n in search.split()[2:]}
        gone = {mid for uid, mid in known.ids.items() if uid not in present}
        # SEARCH MODSEQ names the same messages as CHANGEDSINCE (>= modseq + 1).
        found = client.ok(f"UID SEARCH MODSEQ {known.modseq + 1}")[0]
        numbers = [n for n in found.split()[2:] if n.isdigit()]
        assert {ids[int(n)] for n in numbers} == set(changed)
        return Resync(gone, changed)


def by_id(known: Known) -> dict[str, int]:
    return {mid: uid for uid, mid in known.ids.items()}


def test_resync_after_changes_equals_dovecots(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    # One flag to clear later, set before either client remembers the mailbox.
    with RawClient(dovecot.host, dovecot.port, user, password) as setup:
        setup.ok("SELECT INBOX")
        setup.ok("STORE 1:6 +FLAGS ($ToClear)")
    caught_up((dovecot.host, dovecot.port), (proxy.host, proxy.port), fresh_user, "INBOX")
    direct_known = remember(dovecot.host, dovecot.port, fresh_user)
    proxy_known = remember(proxy.host, proxy.port, fresh_user)
    assert sorted(direct_known.ids.values()) == sorted(proxy_known.ids.values())
    ordered = [direct_known.ids[uid] for uid in sorted(direct_known.ids)]
    up = by_id(direct_known)
    ours = by_id(proxy_known)

    # Changes directly on Dovecot…
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        direct.ok("SELECT INBOX")
        direct.ok(f"UID STORE {up[ordered[0]]} +FLAGS ($Work)")
        direct.ok(f"UID STORE {up[ordered[1]]} -FLAGS ($ToClear)")
        direct.ok(f"UID STORE {up[ordered[2]]},{up[ordered[3]]} +FLAGS (\\Deleted)")
        direct.ok(f"UID EXPUNGE {up[ordered[2]]},{up[ordered[3]]}")
        direct.append("INBOX", "delivered-while-away")
    caught_up((dovecot.host, dovecot.port), (proxy.host, proxy.port), fresh_user, "INBOX")
    # …and through the proxy.
    with RawClient(proxy.host, proxy.port, user, password) as through:
        through.ok("SELECT INBOX")
        through.ok(f"UID STORE {ours[ordered[4]]} +FLAGS ($ViaProxy)")
        through.ok(f"UID STORE {ours[ordered[5]]} +FLAGS (\\Deleted)")
        through.ok(f"UID EXPUNGE {ours[ordered[5]]}")

    direct_resync, _ = qresync(dovecot.host, dovecot.port, fresh_user, direct_known)
    proxy_resync, _ = qresync(proxy.host, proxy.port, fresh_user, proxy_known)
    assert proxy_resync == direct_resync
    assert direct_resync.vanished == {ordered[2], ordered[3], ordered[5]}
    assert {ordered[0], ordered[1], ordered[4]} <= set(direct_resync.changed)
    assert "$Work" in direct_resync.changed[ordered[0]]
    assert "$ToClear" not in direct_resync.changed[ordered[1]]

    assert changedsince(proxy.host, proxy.port, fresh_user, proxy_known) == changedsince(
        dovecot.host, dovecot.port, fresh_user, direct_known
    )


def test_uid_fetch_vanished_equals_dovecots(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    direct_known = remember(dovecot.host, dovecot.port, fresh_user)
    proxy_known = remember(proxy.host, proxy.port, fresh_user)
    ordered = [direct_known.ids[uid] for uid in sorted(direct_known.ids)]
    up = by_id(direct_known)
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        direct.ok("SELECT INBOX")
        direct.ok(f"UID STORE {up[ordered[7]]} +FLAGS (\\Flagged)")
        direct.ok(f"UID STORE {up[ordered[8]]}:{up[ordered[9]]} +FLAGS (\\Deleted)")
        direct.ok("EXPUNGE")
    caught_up((dovecot.host, dovecot.port), (proxy.host, proxy.port), fresh_user, "INBOX")

    def fetch_vanished(host: str, port: int, known: Known) -> Resync:
        with RawClient(host, port, user, password) as client:
            client.ok("ENABLE QRESYNC")
            client.ok("SELECT INBOX")
            ids = message_ids(client)
            lines = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known.modseq} VANISHED)")
            vanished_at = [i for i, line in enumerate(lines) if "VANISHED" in line]
            fetch_at = [i for i, line in enumerate(lines) if "FETCH" in line]
            assert vanished_at and max(vanished_at) < min(fetch_at)  # §3.2.6
            return Resync(
                {known.ids[uid] for uid in _vanished(lines)},
                {ids[_uid(item)]: _flags(item) for item in _fetches(lines)},
            )

    direct = fetch_vanished(dovecot.host, dovecot.port, direct_known)
    through = fetch_vanished(proxy.host, proxy.port, proxy_known)
    assert through == direct
    assert direct.vanished == {ordered[8], ordered[9]}


def test_offline_changes_reach_a_reconnecting_client_once(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    known = remember(proxy.host, proxy.port, fresh_user)
    uids = sorted(known.ids)
    flagged, doomed = uids[0:2], uids[2:4]
    assert proxy.relay is not None
    proxy.relay.cut()
    with RawClient(proxy.host, proxy.port, user, password) as offline:
        offline.ok("SELECT INBOX")
        offline.ok(f"UID STORE {flagged[0]},{flagged[1]} +FLAGS ($Offline)")
        offline.ok(f"UID STORE {doomed[0]},{doomed[1]} +FLAGS (\\Deleted)")
        offline.ok(f"UID EXPUNGE {doomed[0]},{doomed[1]}")
    resync, later = qresync(proxy.host, proxy.port, fresh_user, known)
    assert resync.vanished == {known.ids[u] for u in doomed}
    assert set(resync.changed) == {known.ids[u] for u in flagged}
    assert all("$Offline" in flags for flags in resync.changed.values())

    proxy.relay.resume()
    deadline = time.monotonic() + 30
    while True:
        # Once the queue drained (and the mailbox resynced), nothing is told twice.
        again, _ = qresync(proxy.host, proxy.port, fresh_user, later)
        if again == Resync(set(), {}) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert again == Resync(set(), {})


def test_conditional_store_rfc7162_examples(proxy: ProxyProcess, fresh_user: Account) -> None:
    """Examples 3, 6 and 8 of RFC 7162 §3.1.3, on our own modseqs."""
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        client.ok("SELECT INBOX (CONDSTORE)")
        items = {_uid(i): _modseq(i) for i in _fetches(client.ok("FETCH 1:9 (UID MODSEQ)"))}
        uid_of = dict(enumerate(sorted(items), 1))
        limit = max(items[uid_of[n]] for n in (5, 7, 9))
        # Example 3: all pass; a FETCH with MODSEQ for each, though .SILENT.
        lines = client.ok(
            f"UID STORE {uid_of[6]},{uid_of[4]},{uid_of[8]} (UNCHANGEDSINCE {limit + 100})"
            " +FLAGS.SILENT (\\Deleted)"
        )
        fetched = {_uid(i): _modseq(i) for i in _fetches(lines)}
        assert set(fetched) == {uid_of[4], uid_of[6], uid_of[8]}
        assert all(fetched[uid] > limit for uid in fetched)
        assert not any("FLAGS" in i for i in _fetches(lines))
        # Example 6: 7 and 9 were changed since; 5 passes; MODIFIED names 7,9.
        client.ok("STORE 7,9 +FLAGS.SILENT ($Elsewhere)")
        untagged, tagged = client.command(
            f"STORE 7,5,9 (UNCHANGEDSINCE {limit}) +FLAGS.SILENT ($Conditional)"
        )
        assert tagged.startswith("OK [MODIFIED 7,9]"), tagged
        lines = client.ok("FETCH 5,7,9 (FLAGS)")
        flags = {int(line.split()[1]): _flags(line) for line in lines if "FETCH" in line}
        assert "$Conditional" in flags[5]
        assert "$Conditional" not in flags[7] and "$Conditional" not in flags[9]
        # The failed ones were shown with their flags (example 10's recommendation).
        shown = {int(line.split()[1]) for line in untagged if "FETCH" in line and "FLAGS" in line}
        assert shown == {7, 9}
        # Example 8: UNCHANGEDSINCE 0 always fails.
        _, tagged = client.command("STORE 12 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)")
        assert tagged.startswith("OK [MODIFIED 12]"), tagged


def test_vanished_replaces_expunge_once_qresync_is_enabled(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    """RFC 7162 §3.2.10.2's example: messages 3, 4, 7 and 11 marked \\Deleted."""
    user, password = fresh_user.user, fresh_user.password
    with (
        RawClient(proxy.host, proxy.port, user, password) as plain,
        RawClient(proxy.host, proxy.port, user, password) as quick,
    ):
        quick.ok("ENABLE QRESYNC")
        plain.ok("SELECT INBOX")
        selected = quick.ok("SELECT INBOX")
        before = _code(selected, "HIGHESTMODSEQ")
        uid_of = {
            int(line.split()[1]): _uid(line)
            for line in quick.ok("FETCH 1:11 (UID)")
            if "FETCH" in line
        }
        quick.ok("STORE 3,4,7,11 +FLAGS.SILENT (\\Deleted)")
        untagged, tagged = quick.command("EXPUNGE")
        assert _vanished(untagged, earlier=False) == {uid_of[n] for n in (3, 4, 7, 11)}
        assert not any("EXPUNGE" in line for line in untagged)
        assert re.match(r"OK \[HIGHESTMODSEQ (\d+)\]", tagged), tagged
        assert _code([tagged], "HIGHESTMODSEQ") > before
        # Without QRESYNC: EXPUNGE by sequence number, as RFC 3501 has it (each number
        # valid when sent; the RFC's "3 3 5 8" and our "11 7 4 3" remove the same).
        numbers = [int(x.split()[1]) for x in plain.ok("NOOP") if x.endswith("EXPUNGE")]
        positions = list(range(1, 12))
        removed = [positions.pop(n - 1) for n in numbers]
        assert sorted(removed) == [3, 4, 7, 11]
        # CLOSE expunges without telling, and never with HIGHESTMODSEQ (§3.2.8).
        quick.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        untagged, tagged = quick.command("CLOSE")
        assert tagged.startswith("OK") and "HIGHESTMODSEQ" not in tagged
        assert not any("VANISHED" in line for line in untagged)


def test_qresync_select_rfc7162_examples(proxy: ProxyProcess, fresh_user: Account) -> None:
    """§3.2.5: a UIDVALIDITY mismatch tells nothing; known UIDs and sequence-match data
    narrow VANISHED (EARLIER); QRESYNC without ENABLE is BAD; CLOSED on reselect."""
    user, password = fresh_user.user, fresh_user.password
    known = remember(proxy.host, proxy.port, fresh_user)
    uids = sorted(known.ids)
    with RawClient(proxy.host, proxy.port, user, password) as client:
        client.ok("SELECT INBOX")
        client.ok(f"UID STORE {uids[0]},{uids[2]} +FLAGS.SILENT (\\Deleted)")
        client.ok(f"UID EXPUNGE {uids[0]},{uids[2]}")
        client.ok(f"UID STORE {uids[5]} +FLAGS.SILENT ($Later)")
    with RawClient(proxy.host, proxy.port, user, password) as client:
        _, tagged = client.command(f"SELECT INBOX (QRESYNC ({known.validity} {known.modseq}))")
        assert tagged.startswith("BAD"), tagged
        client.ok("ENABLE QRESYNC")
        lines = client.ok(f"SELECT INBOX (QRESYNC ({known.validity + 1} {known.modseq}))")
        assert not any("VANISHED" in x or "FETCH" in x for x in lines)
        lines = client.ok(f"EXAMINE INBOX (QRESYNC ({known.validity} {known.modseq}))")
        assert lines[0].startswith("* OK [CLOSED]")
        assert _vanished(lines) == {uids[0], uids[2]}
        assert {_uid(i) for i in _fetches(lines)} == {uids[5]}
        # Known UIDs: only those are reported.
        lines = client.ok(
            f"EXAMINE INBOX (QRESYNC ({known.validity} {known.modseq} {uids[1]}:{uids[10]}))"
        )
        assert _vanished(lines) == {uids[2]}
        # Sequence-match data: message 2 still has uids[3] (1 and 3 went), so the
        # client knows of every expunge up to it.
        lines = client.ok(
            f"EXAMINE INBOX (QRESYNC ({known.validity} {known.modseq} 1:{uids[-1]} (2 {uids[3]})))"
        )
        assert _vanished(lines) == set()
        lines = client.ok(
            f"EXAMINE INBOX (QRESYNC ({known.validity} {known.modseq} 1:{uids[-1]} (1 {uids[0]})))"
        )
        assert _vanished(lines) == {uids[0], uids[2]}


def test_enable_and_status_and_search_modseq(proxy: ProxyProcess, fresh_user: Account) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        capabilities = client.ok("CAPABILITY")[0].split()
        assert {"CONDSTORE", "QRESYNC", "ENABLE"} <= set(capabilities)
        assert client.ok("ENABLE CONDSTORE QRESYNC") == ["* ENABLED CONDSTORE QRESYNC"]
        assert client.ok("ENABLE QRESYNC") == ["* ENABLED"]
        status = client.ok("STATUS INBOX (MESSAGES HIGHESTMODSEQ)")[0]
        selected = client.ok("SELECT INBOX")
        assert f"HIGHESTMODSEQ {_code(selected, 'HIGHESTMODSEQ')}" in status
        client.ok("STORE 2,4 +FLAGS.SILENT ($Marked)")
        lines = client.ok("FETCH 1:* (MODSEQ)")
        modseqs = {int(line.split()[1]): _modseq(line) for line in lines if "FETCH" in line}
        since = min(modseqs[2], modseqs[4])
        # Example 15's shape: the highest modseq of what was found, appended.
        found = client.ok(f"SEARCH MODSEQ {since}")[0]
        assert found == f"* SEARCH 2 4 (MODSEQ {max(modseqs[2], modseqs[4])})", found
        # Example 19: ESEARCH carries MODSEQ.
        found = client.ok(f"SEARCH RETURN (ALL) MODSEQ {since}")[0]
        assert found.endswith(f"ALL 2,4 MODSEQ {max(modseqs[2], modseqs[4])}"), found
        # Example 16: nothing found, no MODSEQ.
        assert client.ok(f"SEARCH MODSEQ {max(modseqs.values()) + 1}") == ["* SEARCH"]
        # Mixed with a text key the upstream answers: our modseqs still decide.
        found = client.ok(f"SEARCH MODSEQ {since} SUBJECT a")[0]
        assert set(found.split()[2:]) <= {"2", "4", "(MODSEQ", f"{max(modseqs[2], modseqs[4])})"}
