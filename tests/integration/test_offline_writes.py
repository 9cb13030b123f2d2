"""Changing mail with the upstream link cut, then restoring it: every change is accepted
at once, seen by every session, and reaches the upstream exactly once (RFC 4549 replay),
merged with what others changed meanwhile; what the upstream refuses is kept."""

from __future__ import annotations

import time
from collections.abc import Callable

from imapclient import IMAPClient

from tests.integration.clients import imap, without_recent
from tests.integration.test_writes import _by_message_id, _message, _response_code, _upstream
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot

REPLAY_TIMEOUT = 40.0


def _until(done: Callable[[], bool], poke: IMAPClient | None = None, what: str = "") -> None:
    """Wait for done(), nudging the proxy with NOOPs (a NOOP resyncs, which replays first)."""
    deadline = time.monotonic() + REPLAY_TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if poke is not None:
            poke.noop()
        time.sleep(0.3)


def _folders(client: IMAPClient, subscribed: bool = False) -> set[str]:
    client.folder_encode = False
    listing = client.list_sub_folders() if subscribed else client.list_folders()
    return {n if isinstance(n, str) else n.decode() for _, _, n in listing}


def test_offline_changes_replay_exactly_once(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    inbox_before = _upstream(dovecot, fresh_user, "INBOX")
    archive_before = _upstream(dovecot, fresh_user, "Archive/2024")
    draft = _message("offline draft", "offline-draft@imapproxy.test")
    with (
        imap(proxy.host, proxy.port, fresh_user) as client,
        imap(proxy.host, proxy.port, fresh_user) as other,
    ):
        view = _by_message_id(client, "INBOX")  # read while online: metadata cached
        _by_message_id(client, "Drafts")
        _by_message_id(client, "Archive/2024")
        by_uid = {uid: mid for mid, (uid, _) in view.items()}
        uids = sorted(by_uid)
        seen, flagged, moved, doomed = uids[0:3], uids[3:5], uids[5:7], uids[7:9]
        client.select_folder("INBOX")
        other.select_folder("INBOX")

        proxy.relay.cut()
        started = time.monotonic()
        client.add_flags(seen, [b"\\Seen"])
        client.remove_flags(seen, [b"\\Seen"])  # changed mind…
        client.add_flags(seen, [b"\\Seen", b"$Read"])  # …and back
        client.add_flags(flagged, [b"\\Flagged"])
        client.move(moved, "Archive/2024")
        client.add_flags(doomed, [b"\\Deleted"])
        client.expunge()
        answer = client.append("Drafts", draft, flags=[b"\\Draft"])
        _, draft_uid = (int(x) for x in _response_code(answer, "APPENDUID"))
        client.create_folder("Trips")
        client.create_folder("Old")
        client.rename_folder("Old", "Older")
        client.subscribe_folder("Trips")
        client.delete_folder("Empty")
        assert time.monotonic() - started < 5, "offline changes must not wait on the link"

        # Seen at once, by this session and the other one, while still offline.
        left = client.search(["ALL"])
        assert not set(moved + doomed) & set(left)
        other.noop()
        assert set(flagged) <= set(other.search(["FLAGGED"]))
        assert {"Trips", "Older"} <= _folders(other) and "Empty" not in _folders(other)
        assert "Trips" in _folders(other, subscribed=True)
        client.select_folder("Drafts")
        drafts = client.fetch([draft_uid], ["BODY.PEEK[]", "FLAGS"])
        assert drafts[draft_uid][b"BODY[]"] == draft
        client.select_folder("INBOX")

        proxy.relay.resume()
        expected_inbox = {mid for mid in inbox_before if by_uid_of(view, mid) not in moved + doomed}

        def replayed() -> bool:
            with imap(dovecot.host, dovecot.port, fresh_user) as direct:
                return "Older" in _folders(direct) and "Empty" not in _folders(direct)

        _until(replayed, client, "the offline changes to reach the upstream")
        client.noop()

    # The upstream's final state is what the user did, each change once.
    inbox = _upstream(dovecot, fresh_user, "INBOX")
    assert set(inbox) == expected_inbox
    for uid in seen:
        assert {b"\\Seen", b"$Read"} <= inbox[by_uid[uid]][1]
    for uid in flagged:
        assert b"\\Flagged" in inbox[by_uid[uid]][1]
    archive = _upstream(dovecot, fresh_user, "Archive/2024")
    assert set(archive) == set(archive_before) | {by_uid[u] for u in moved}
    assert len(archive) == len(archive_before) + 2, "a move was replayed twice"
    drafts_up = _upstream(dovecot, fresh_user, "Drafts")
    assert list(drafts_up).count(b"offline-draft@imapproxy.test") == 1
    assert b"\\Draft" in drafts_up[b"offline-draft@imapproxy.test"][1]
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        folders = _folders(direct)
        assert {"Trips", "Older"} <= folders and not {"Old", "Empty"} & folders
        assert "Trips" in _folders(direct, subscribed=True)
        direct.select_folder("Drafts", readonly=True)
        found = direct.search(["HEADER", "Message-ID", "offline-draft@imapproxy.test"])
        assert direct.fetch(found, ["BODY.PEEK[]"])[found[0]][b"BODY[]"] == draft

    # And the proxy agrees with the upstream, the draft under the UID it gave offline.
    with imap(proxy.host, proxy.port, fresh_user) as client:
        assert _by_message_id(client, "INBOX").keys() == inbox.keys()
        through = _by_message_id(client, "Drafts")
        assert through[b"offline-draft@imapproxy.test"][0] == draft_uid
        assert {k: f for k, (_, f) in _by_message_id(client, "Archive/2024").items()} == {
            k: f for k, (_, f) in archive.items()
        }


def by_uid_of(view: dict[bytes, tuple[int, set[bytes]]], mid: bytes) -> int:
    return view[mid][0]


def test_two_clients_on_either_side_of_the_cut_merge_flags(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        view = _by_message_id(client, "INBOX")
        mid = sorted(view, key=lambda m: view[m][0])[10]
        uid = view[mid][0]
        client.select_folder("INBOX")
        client.add_flags([uid], [b"$Label"])
        proxy.relay.cut()
        # Offline here: flag it, drop the label.
        client.add_flags([uid], [b"\\Flagged"])
        client.remove_flags([uid], [b"$Label"])
        # Meanwhile another device, straight on the upstream: read it, add a keyword.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            [up_uid] = direct.search(["HEADER", "Message-ID", mid.decode()])
            direct.add_flags([up_uid], [b"\\Seen", b"$Phone"])
        proxy.relay.resume()
        expected = {b"\\Flagged", b"\\Seen", b"$Phone"}

        def merged() -> bool:
            return _upstream(dovecot, fresh_user)[mid][1] == expected

        _until(merged, client, "flags to merge upstream")
        _until(
            lambda: without_recent(client.get_flags([uid])[uid]) == expected,
            client,
            "the proxy to show the merged flags",
        )


def test_refused_replay_ends_in_recovered_with_its_data(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    draft = _message("refused draft", "refused@imapproxy.test", b"keep me\r\n")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.create_folder("Doomed")
        client.select_folder("INBOX")
        proxy.relay.cut()
        client.append("Doomed", draft)
        # Meanwhile the folder goes away upstream: the APPEND will be refused for good.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.delete_folder("Doomed")
        proxy.relay.resume()
        _until(
            lambda: "Recovered" in _folders(client), client, "the refused message to be recovered"
        )
        client.select_folder("Recovered", readonly=True)
        [kept] = client.search(["ALL"])
        assert client.fetch([kept], ["BODY.PEEK[]"])[kept][b"BODY[]"] == draft
        client.select_folder("INBOX", readonly=True)
        # (SUBJECT searches go upstream, which does not hold this local note: read it.)
        subjects = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        notes = [
            u
            for u, item in subjects.items()
            if b"imapproxy" in item[b"BODY[HEADER.FIELDS (SUBJECT)]"]
        ]
        assert len(notes) == 1
        note = client.fetch(notes, ["BODY.PEEK[TEXT]"])[notes[0]][b"BODY[TEXT]"]
        assert b"Recovered" in note and b"Doomed" in note
        assert "Doomed" not in _folders(client)
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        assert "Doomed" not in _folders(direct)
    assert (proxy.state_dir / "replica").exists()
    proxy.stop()
    from imapproxy.store import Store, accounts, outbox

    store = Store(proxy.state_dir / "replica")
    try:
        account = store.read(
            lambda tx: accounts.find_account(tx, proxy.upstream_url, fresh_user.user)
        )
        refused = store.read(lambda tx: outbox.refused(tx, account.id))
        assert [e.op for e in refused] == ["append"]
    finally:
        store.close()


def test_expunge_the_upstream_did_not_carry_out_comes_back(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    """Deleted and expunged offline, but another client cleared \\Deleted upstream
    meanwhile: UID EXPUNGE leaves it, and the resync brings it back (at any UID)."""
    proxy = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        view = _by_message_id(client, "INBOX")
        mid = sorted(view, key=lambda m: view[m][0])[20]
        client.select_folder("INBOX")
        client.add_flags([view[mid][0]], [b"\\Deleted"])  # online: upstream has it
        proxy.relay.cut()
        client.expunge()
        assert mid not in _by_message_id(client, "INBOX")
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            [up_uid] = direct.search(["HEADER", "Message-ID", mid.decode()])
            direct.remove_flags([up_uid], [b"\\Deleted"])
        proxy.relay.resume()
        client.select_folder("INBOX")
        _until(lambda: mid in _by_message_id(client, "INBOX"), client, "the message to come back")
    assert mid in _upstream(dovecot, fresh_user, "INBOX")


def test_replay_needs_no_client_once_the_link_returns(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    """The change is made offline and the client goes away; when the link comes back
    the proxy reconnects on its own and replays, without waiting for the next client."""
    proxy = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        view = _by_message_id(client, "INBOX")
        uid, _ = next(iter(view.values()))
        client.select_folder("INBOX")
        proxy.relay.cut()
        client.add_flags([uid], [b"$AloneReplay"])
        client.unselect_folder()
    time.sleep(1)  # the link notices the cut and backs off, with nobody watching
    proxy.relay.resume()

    def replayed() -> bool:
        return any(
            b"$AloneReplay" in flags
            for _, flags in _upstream(dovecot, fresh_user, "INBOX").values()
        )

    _until(replayed, what="the replay with no client connected")


def test_flags_changed_on_another_device_meanwhile_keep_both_changes(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    """RFC 7162 UNCHANGEDSINCE replay against Dovecot (CONDSTORE): messages changed on
    another device while this one was offline are reported MODIFIED, merged per flag
    (a flag the user changed takes the user's value, every other keeps the upstream's),
    and the proxy ends equal to the upstream."""
    proxy = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        view = _by_message_id(client, "INBOX")
        order = sorted(view, key=lambda m: view[m][0])
        read, replaced, unread, alone = order[30:34]
        uid = {mid: view[mid][0] for mid in order}
        client.select_folder("INBOX")
        client.remove_flags([uid[m] for m in (read, replaced, unread, alone)], [b"\\Seen"])
        client.add_flags([uid[replaced], uid[unread]], [b"\\Seen", b"$Label"])
        client.noop()
        proxy.relay.cut()
        # Offline here, through the proxy.
        client.add_flags([uid[read]], [b"\\Seen"])
        client.set_flags([uid[replaced]], [b"\\Seen", b"\\Answered"])  # +\Answered -$Label
        client.remove_flags([uid[unread]], [b"\\Seen"])
        client.add_flags([uid[alone]], [b"\\Flagged"])
        # Meanwhile another device, straight on the upstream.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            up = {m: direct.search(["HEADER", "Message-ID", m.decode()])[0] for m in order[30:34]}
            direct.add_flags([up[read]], [b"\\Flagged"])
            direct.remove_flags([up[replaced]], [b"\\Seen"])  # marked unread on the phone
            direct.add_flags([up[replaced]], [b"$Phone"])
            direct.remove_flags([up[unread]], [b"\\Seen"])  # the same change, made twice
            direct.add_flags([up[unread]], [b"$Later"])
        proxy.relay.resume()
        expected = {
            read: {b"\\Seen", b"\\Flagged"},
            replaced: {b"\\Answered", b"$Phone"},
            unread: {b"$Label", b"$Later"},
            alone: {b"\\Flagged"},
        }

        def upstream_done() -> bool:
            now = _upstream(dovecot, fresh_user)
            return all(now[m][1] == flags for m, flags in expected.items())

        _until(upstream_done, client, "flags to merge upstream")
        _until(
            lambda: all(
                without_recent(flags) == expected[m]
                for m, flags in ((m, client.get_flags([uid[m]])[uid[m]]) for m in expected)
            ),
            client,
            "the proxy to show the upstream's flags",
        )
    log = proxy.log_text()
    assert "changed upstream meanwhile: merging flags" in log, proxy.log_tail()
    assert "Traceback" not in log, proxy.log_tail()
