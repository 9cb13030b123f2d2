"""Writes through the proxy (STORE, COPY, MOVE, EXPUNGE, APPEND, folder operations) reach
the upstream before the client hears OK, and the proxy answers in its own UID space."""

from __future__ import annotations

import hashlib
import imaplib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from imapclient import IMAPClient

from tests.integration.clients import imap, without_recent
from tests.support.corpus import Account, imap_name
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

MSGID_FIELD = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
_MSGID_RE = re.compile(rb"<([^>]+)>")


def _message(subject: str, message_id: str, body: bytes = b"hello\r\n") -> bytes:
    return (
        f"From: Writer <w@example.org>\r\nTo: r@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body


def _by_message_id(client: IMAPClient, mailbox: str) -> dict[bytes, tuple[int, set[bytes]]]:
    """Message-ID -> (UID, flags without \\Recent) of every message in mailbox."""
    client.folder_encode = False
    exists = client.select_folder(mailbox, readonly=True)[b"EXISTS"]
    if not exists:
        return {}
    out = {}
    for uid, item in client.fetch(
        client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
    ).items():
        match = _MSGID_RE.search(item[MSGID_FIELD])
        assert match is not None, item
        out[match.group(1)] = (uid, without_recent(item[b"FLAGS"]))
    return out


def _upstream(
    dovecot: Dovecot, account: Account, mailbox: str = "INBOX"
) -> dict[bytes, tuple[int, set[bytes]]]:
    with imap(dovecot.host, dovecot.port, account) as direct:
        return _by_message_id(direct, mailbox)


def _flags(view: dict[bytes, tuple[int, set[bytes]]]) -> dict[bytes, set[bytes]]:
    return {mid: flags for mid, (_, flags) in view.items()}


def _response_code(text: bytes | str, name: str) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode()
    match = re.search(r"\[" + name + r" ([^\]]*)\]", text)
    assert match is not None, f"no [{name} ...] in {text!r}"
    return match.group(1).split()


def _tagged(client: IMAPClient, *words: str) -> tuple[str, bytes]:
    """Run a command through imaplib and return the tagged status and text (with its code)."""
    imap4 = client._imap
    tag = imap4._command(*words)
    typ, data = imap4._command_complete(words[0], tag)
    return typ, data[-1]


def _uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


# -- STORE ---------------------------------------------------------------------------------


def test_store_add_remove_replace_flags_and_keywords(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with (
        imap(proxy.host, proxy.port, fresh_user) as a,
        imap(proxy.host, proxy.port, fresh_user) as b,
    ):
        view = _by_message_id(a, "INBOX")
        a.select_folder("INBOX")
        b.select_folder("INBOX")
        ids = sorted(view, key=lambda mid: view[mid][0])[:3]
        first, second, third = (view[mid][0] for mid in ids)

        a.add_flags([first, second], [b"\\Flagged", b"$Label1"])
        a.add_flags([third], [b"\\Answered", b"Project-X"])
        a.remove_flags([second], [b"$Label1"])
        a.set_flags([third], [b"\\Draft", b"Other"])

        expected = {
            ids[0]: view[ids[0]][1] | {b"\\Flagged", b"$Label1"},
            ids[1]: view[ids[1]][1] | {b"\\Flagged"},
            ids[2]: {b"\\Draft", b"Other"},
        }
        upstream = _flags(_upstream(dovecot, fresh_user))
        for mid, flags in expected.items():
            assert upstream[mid] == flags, mid
        # Untouched messages keep their flags upstream.
        for mid in set(view) - set(ids):
            assert upstream[mid] == view[mid][1], mid

        # The other proxy session learns of it at its next command and agrees.
        b.noop()
        seen_by_b = b.get_flags([first, second, third])
        assert {k: without_recent(v) for k, v in seen_by_b.items()} == {
            first: expected[ids[0]],
            second: expected[ids[1]],
            third: expected[ids[2]],
        }
    # And a brand-new session sees the same as the upstream for every message.
    with imap(proxy.host, proxy.port, fresh_user) as c:
        assert _flags(_by_message_id(c, "INBOX")) == upstream


# -- COPY / MOVE ---------------------------------------------------------------------------


def test_uid_copy_answers_copyuid_in_the_proxys_uid_space(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    target = "Archive/2024"
    before_upstream = _upstream(dovecot, fresh_user, target)
    with imap(proxy.host, proxy.port, fresh_user) as client:
        source_view = _by_message_id(client, "INBOX")
        target_view = _by_message_id(client, target)
        client.select_folder("INBOX")
        picked = sorted(source_view.values())[4:7]
        source_uids = [uid for uid, _ in picked]
        bodies = client.fetch(source_uids, ["BODY.PEEK[]"])
        typ, answer = _tagged(client, "UID", "COPY", ",".join(map(str, source_uids)), f'"{target}"')
        assert typ == "OK", answer
        validity, sources, dests = _response_code(answer, "COPYUID")
        assert _uid_set(sources) == source_uids
        dest_uids = _uid_set(dests)
        assert len(dest_uids) == 3

        status = client.select_folder(target, readonly=True)
        assert int(validity) == status[b"UIDVALIDITY"]
        assert status[b"EXISTS"] == len(target_view) + 3
        copied = client.fetch(dest_uids, ["BODY.PEEK[]"])
        assert set(copied) == set(dest_uids), "COPYUID names UIDs that do not FETCH in the target"
        for src, dst in zip(source_uids, dest_uids, strict=True):
            assert copied[dst][b"BODY[]"] == bodies[src][b"BODY[]"]
        assert not set(dest_uids) & {uid for uid, _ in target_view.values()}

    after_upstream = _upstream(dovecot, fresh_user, target)
    assert len(after_upstream) == len(before_upstream) + 3
    moved_ids = {mid for mid, (uid, _) in source_view.items() if uid in source_uids}
    assert moved_ids <= set(after_upstream)
    # COPY leaves the source alone.
    assert set(_upstream(dovecot, fresh_user, "INBOX")) == set(source_view)


def test_uid_move_expunges_from_source_and_lands_in_target(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    target = "Sent"
    with imap(proxy.host, proxy.port, fresh_user) as client:
        source_view = _by_message_id(client, "INBOX")
        exists = client.select_folder("INBOX")[b"EXISTS"]
        by_uid = {uid: mid for mid, (uid, _) in source_view.items()}
        moving = sorted(by_uid)[10:12]
        client._imap.untagged_responses.clear()
        answer = client.move(moving, target)
        expunges = client._imap.untagged_responses.get("EXPUNGE", [])
        assert len(expunges) == 2, (answer, client._imap.untagged_responses)
        # The new message count, after the EXPUNGEs, is what the proxy now reports.
        assert client.select_folder("INBOX")[b"EXISTS"] == exists - 2
        remaining = client.search(["ALL"])
        assert not set(moving) & set(remaining)

    moved_ids = {by_uid[uid] for uid in moving}
    upstream_inbox = _upstream(dovecot, fresh_user, "INBOX")
    upstream_target = _upstream(dovecot, fresh_user, target)
    assert not moved_ids & set(upstream_inbox)
    assert len(upstream_inbox) == len(source_view) - 2
    assert moved_ids <= set(upstream_target)
    with imap(proxy.host, proxy.port, fresh_user) as client:
        assert moved_ids <= set(_by_message_id(client, target))


def test_copy_to_missing_mailbox_gets_trycreate(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        client.login(fresh_user.user, fresh_user.password)
        client.select("INBOX")
        typ, data = client.uid("COPY", "1:*", "No/Such/Box")
        assert typ == "NO", data
        assert data[0].startswith(b"[TRYCREATE]"), data
        typ, data = client.copy("1", "NoSuchBox")
        assert typ == "NO" and data[0].startswith(b"[TRYCREATE]"), data
        assert client.noop()[0] == "OK"
    finally:
        client.logout()
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        names = {name for _, _, name in direct.list_folders()}
    assert "NoSuchBox" not in names and "No/Such/Box" not in names


# -- APPEND --------------------------------------------------------------------------------


def test_append_with_flags_and_internaldate(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    raw = _message(
        "appended through the proxy",
        "append-1@imapproxy.test",
        b"line one\r\nline two \xc3\xa9\r\n",
    )
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=9)))
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.normalise_times = False
        answer = client.append("Sent", raw, flags=[b"\\Seen", b"$Important"], msg_time=when)
        validity, uid = (int(x) for x in _response_code(answer, "APPENDUID"))
        status = client.select_folder("Sent", readonly=True)
        assert status[b"UIDVALIDITY"] == validity
        through = client.fetch([uid], ["BODY.PEEK[]", "INTERNALDATE", "FLAGS", "RFC822.SIZE"])
        assert uid in through, f"APPENDUID {uid} does not FETCH through the proxy"
        through = through[uid]
    assert through[b"BODY[]"] == raw
    assert through[b"RFC822.SIZE"] == len(raw)
    assert without_recent(through[b"FLAGS"]) == {b"\\Seen", b"$Important"}
    assert through[b"INTERNALDATE"] == when

    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        direct.normalise_times = False
        direct.select_folder("Sent", readonly=True)
        found = direct.search(["HEADER", "Message-ID", "append-1@imapproxy.test"])
        assert len(found) == 1
        upstream = direct.fetch(found, ["BODY.PEEK[]", "INTERNALDATE", "FLAGS"])[found[0]]
    assert upstream[b"BODY[]"] == raw
    assert without_recent(upstream[b"FLAGS"]) == {b"\\Seen", b"$Important"}
    assert upstream[b"INTERNALDATE"] == through[b"INTERNALDATE"]


def test_appended_message_survives_resync(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    """A client APPENDs to the mailbox it has open (saving a draft): the message must stay
    there through the next resyncs, not be taken for expunged."""
    raw = _message("draft", "draft-1@imapproxy.test")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        exists = client.select_folder("Sent")[b"EXISTS"]
        answer = client.append("Sent", raw)
        _, uid = (int(x) for x in _response_code(answer, "APPENDUID"))
        client.noop()
        assert uid in client.search(["ALL"]), "appended message vanished after NOOP"
        assert client.select_folder("Sent")[b"EXISTS"] == exists + 1
        assert client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]") == raw
    assert b"draft-1@imapproxy.test" in _upstream(dovecot, fresh_user, "Sent")


def test_append_to_missing_mailbox_gets_trycreate(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        client.login(fresh_user.user, fresh_user.password)
        typ, data = client.append("Missing", None, None, _message("x", "missing@imapproxy.test"))
        assert typ == "NO", data
        assert data[0].startswith(b"[TRYCREATE]"), data
        assert client.noop()[0] == "OK"
    finally:
        client.logout()
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        assert "Missing" not in {name for _, _, name in direct.list_folders()}


# -- EXPUNGE / CLOSE / UNSELECT ------------------------------------------------------------


def test_expunge_removes_only_deleted_messages_of_this_mailbox(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as client:
        sent = _by_message_id(client, "Sent")
        client.select_folder("Sent")
        sent_doomed_uid = min(uid for uid, _ in sent.values())
        client.add_flags([sent_doomed_uid], [b"\\Deleted"])

        inbox = _by_message_id(client, "INBOX")
        client.select_folder("INBOX")
        by_uid = {uid: mid for mid, (uid, _) in inbox.items()}
        doomed = sorted(by_uid)[2:4]
        client.add_flags(doomed, [b"\\Deleted"])
        client._imap.untagged_responses.clear()
        client.expunge()
        assert len(client._imap.untagged_responses.get("EXPUNGE", [])) == 2
        assert client.search(["DELETED"]) == []

    upstream_inbox = _upstream(dovecot, fresh_user, "INBOX")
    assert set(upstream_inbox) == set(inbox) - {by_uid[uid] for uid in doomed}
    upstream_sent = _upstream(dovecot, fresh_user, "Sent")
    assert set(upstream_sent) == set(sent), "EXPUNGE in INBOX touched Sent"
    sent_doomed = next(mid for mid, (uid, _) in sent.items() if uid == sent_doomed_uid)
    assert b"\\Deleted" in upstream_sent[sent_doomed][1]


def test_uid_expunge_of_a_subset_leaves_other_deleted_messages(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as client:
        inbox = _by_message_id(client, "INBOX")
        client.select_folder("INBOX")
        by_uid = {uid: mid for mid, (uid, _) in inbox.items()}
        deleted = sorted(by_uid)[20:23]
        client.add_flags(deleted, [b"\\Deleted"])
        client.expunge([deleted[1]])  # UID EXPUNGE (UIDPLUS)
        left = client.search(["DELETED"])
        assert sorted(left) == [deleted[0], deleted[2]]

    upstream = _upstream(dovecot, fresh_user, "INBOX")
    assert by_uid[deleted[1]] not in upstream
    assert len(upstream) == len(inbox) - 1
    for uid in (deleted[0], deleted[2]):
        assert b"\\Deleted" in upstream[by_uid[uid]][1]


def test_close_expunges_silently_and_unselect_does_not(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as client:
        inbox = _by_message_id(client, "INBOX")
        by_uid = {uid: mid for mid, (uid, _) in inbox.items()}
        closed, unselected = sorted(by_uid)[30:32]

        client.select_folder("INBOX")
        client.add_flags([closed], [b"\\Deleted"])
        client._imap.untagged_responses.clear()
        client.close_folder()
        assert "EXPUNGE" not in client._imap.untagged_responses, "CLOSE must expunge silently"
        upstream = _upstream(dovecot, fresh_user, "INBOX")
        assert by_uid[closed] not in upstream
        assert len(upstream) == len(inbox) - 1

        client.select_folder("INBOX")
        assert closed not in client.search(["ALL"])
        client.add_flags([unselected], [b"\\Deleted"])
        client._imap.untagged_responses.clear()
        client.unselect_folder()
        assert "EXPUNGE" not in client._imap.untagged_responses
        upstream = _upstream(dovecot, fresh_user, "INBOX")
        assert b"\\Deleted" in upstream[by_uid[unselected]][1], "UNSELECT expunged"
        assert len(upstream) == len(inbox) - 1

        client.select_folder("INBOX", readonly=True)
        assert client.search(["DELETED"]) == [unselected]


# -- folders -------------------------------------------------------------------------------


def _names(host: str, port: int, account: Account, lsub: bool = False) -> set[str]:
    with imap(host, port, account) as client:
        client.folder_encode = False
        folders = client.list_sub_folders() if lsub else client.list_folders()
        return {name if isinstance(name, str) else name.decode() for _, _, name in folders}


def test_create_rename_delete_including_non_ascii(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    korean = imap_name("보낸편지함")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.folder_encode = False
        client.create_folder("Projects")
        client.create_folder("Projects/2025")
        client.select_folder("Projects/2025")
        client.append("Projects/2025", _message("in a child", "child@imapproxy.test"))
        client.unselect_folder()
        for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
            names = _names(host, port, fresh_user)
            assert {"Projects", "Projects/2025"} <= names, (port, names)

        client.rename_folder("Projects", korean)
        for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
            names = _names(host, port, fresh_user)
            assert {korean, f"{korean}/2025"} <= names, (port, names)
            assert not {"Projects", "Projects/2025"} & names, (port, names)
        # The renamed child keeps its message, readable through the proxy.
        client.select_folder(f"{korean}/2025", readonly=True)
        bodies = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
        assert [v[b"BODY[]"] for v in bodies.values()] == [
            _message("in a child", "child@imapproxy.test")
        ]
        client.unselect_folder()

        client.delete_folder(f"{korean}/2025")
        client.delete_folder(korean)
        for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
            names = _names(host, port, fresh_user)
            assert not {korean, f"{korean}/2025"} & names, (port, names)
            assert "INBOX" in names


def test_subscribe_and_unsubscribe_reach_the_upstream(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    name = imap_name("구독 Folder")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.folder_encode = False
        client.create_folder(name)
        client.unsubscribe_folder(name)  # a fresh folder may be auto-subscribed by the server
        assert name not in _names(dovecot.host, dovecot.port, fresh_user, lsub=True)
        client.subscribe_folder(name)
        assert name in _names(dovecot.host, dovecot.port, fresh_user, lsub=True)
        assert name in _names(proxy.host, proxy.port, fresh_user, lsub=True)
        client.unsubscribe_folder(name)
        assert name not in _names(dovecot.host, dovecot.port, fresh_user, lsub=True)
        assert name not in _names(proxy.host, proxy.port, fresh_user, lsub=True)
        # The folder itself is still there.
        assert name in _names(dovecot.host, dovecot.port, fresh_user)


# -- a large APPEND ------------------------------------------------------------------------

BIG = 30 * 2**20


def _vm_hwm(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def _big_message() -> bytes:
    head = _message("thirty megabytes", "big@imapproxy.test", b"")
    line = b"".join(bytes([65 + (i % 26)]) for i in range(76)) + b"\r\n"
    lines = []
    n = 0
    while len(head) + 78 * len(lines) < BIG:
        # Vary the lines so nothing can shortcut a run of identical bytes.
        lines.append(line[n % 76 :] + line[: n % 76] if n % 7 else f"{n:076d}\r\n".encode())
        n += 1
    return head + b"".join(lines)


def test_30mb_append_streams_and_reads_back_identical(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    raw = _big_message()
    digest = hashlib.sha256(raw).hexdigest()
    assert proxy.pid is not None
    mib = 2**20
    # Drafts has not been synced by this proxy yet: the first SELECT after the APPEND
    # lists it whole (test_appended_message_survives_resync covers the other case).
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder("INBOX")
        client.unselect_folder()
        # The login's scrypt (16 MB) runs once the link is quiet: in the baseline, not
        # in the APPEND's peak.
        proxy.wait_for_log("offline verifier of")
        # Measured (Dovecot 2.3, loopback): baseline ~64 MiB (login's scrypt included),
        # ~2.5 copies of the message on top during the APPEND (received, written to the
        # replica, read back to go upstream), nothing more for the FETCH. README.md says
        # so; the bound leaves half a copy for allocator noise.
        baseline = _vm_hwm(proxy.pid)
        answer = client.append("Drafts", raw)
        _, uid = (int(x) for x in _response_code(answer, "APPENDUID"))
        after_append = _vm_hwm(proxy.pid)
        bound = baseline + 3 * len(raw)
        assert after_append <= bound, (
            f"APPEND of {len(raw) / mib:.0f} MiB: peak RSS {after_append / mib:.0f} MiB, "
            f"baseline {baseline / mib:.0f} MiB, bound {bound / mib:.0f} MiB"
        )

        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("Drafts", readonly=True)
            found = direct.search(["HEADER", "Message-ID", "big@imapproxy.test"])
            assert len(found) == 1
            upstream = direct.fetch(found, ["BODY.PEEK[]"])[found[0]][b"BODY[]"]
        assert hashlib.sha256(upstream).hexdigest() == digest
        del upstream

        client.select_folder("Drafts", readonly=True)
        back = client.fetch([uid], ["BODY.PEEK[]", "RFC822.SIZE"])
        assert uid in back, f"APPENDUID {uid} does not FETCH through the proxy"
        assert back[uid][b"RFC822.SIZE"] == len(raw)
        assert hashlib.sha256(back[uid][b"BODY[]"]).hexdigest() == digest
        del back
    peak = _vm_hwm(proxy.pid)
    assert peak <= bound, (
        f"APPEND+FETCH of {len(raw) / mib:.0f} MiB: peak RSS {peak / mib:.0f} MiB, "
        f"baseline {baseline / mib:.0f} MiB, bound {bound / mib:.0f} MiB"
    )
