"""What a client sees through the proxy equals what it sees directly on Dovecot."""

from __future__ import annotations

import pytest

from tests.integration.clients import imap, without_recent
from tests.support.corpus import KOREAN_FOLDER, Account, imap_name
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

METADATA = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODYSTRUCTURE"]
SECTIONS = [
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.1]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM MESSAGE-ID)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)]",
    "BODY.PEEK[]<0.100>",
    "BODY.PEEK[TEXT]<50.70>",
]


def _listing(host: str, port: int, account: Account) -> dict[str, tuple[set[bytes], bytes]]:
    with imap(host, port, account) as client:
        client.folder_encode = False
        return {
            name if isinstance(name, str) else name.decode(): (set(flags), delim)
            for flags, delim, name in client.list_folders()
        }


def test_same_mailboxes_including_non_ascii_names(
    dovecot: Dovecot, proxy: ProxyProcess, alice: Account
) -> None:
    direct = _listing(dovecot.host, dovecot.port, alice)
    proxied = _listing(proxy.host, proxy.port, alice)
    assert proxied == direct
    assert imap_name(KOREAN_FOLDER) in proxied


@pytest.mark.parametrize("mailbox", ["INBOX", "Archive/2024", KOREAN_FOLDER])
def test_same_status_metadata_and_bodies(
    dovecot: Dovecot, proxy: ProxyProcess, alice: Account, mailbox: str
) -> None:
    name = imap_name(mailbox)
    views = []
    for host, port in ((dovecot.host, dovecot.port), (proxy.host, proxy.port)):
        with imap(host, port, alice) as client:
            client.folder_encode = False
            status = client.folder_status(name, [b"MESSAGES", b"UNSEEN", b"RECENT"])
            selected = client.select_folder(name, readonly=True)
            client.use_uid = False  # our UIDs are our own: compare by sequence number
            every = list(range(1, selected[b"EXISTS"] + 1))
            meta = client.fetch(every, METADATA) if every else {}
            sections = client.fetch(every, SECTIONS) if every else {}
            search = {
                "unseen": client.search(["UNSEEN"]),
                "flagged": client.search(["FLAGGED"]),
                "larger": client.search(["LARGER", "10000"]),
                "subject": client.search(["SUBJECT", "Lunch"]),
                "or": client.search(["OR", "SEEN", "NOT", "ANSWERED"]),
            }
            views.append((status, selected[b"EXISTS"], meta, sections, search))
    (
        (d_status, d_exists, d_meta, d_sections, d_search),
        (p_status, p_exists, p_meta, p_sections, p_search),
    ) = views
    assert p_status[b"MESSAGES"] == d_status[b"MESSAGES"] == len(alice.mailboxes[mailbox])
    assert p_status[b"UNSEEN"] == d_status[b"UNSEEN"]
    assert p_exists == d_exists
    assert set(p_meta) == set(d_meta)
    for seq, direct in d_meta.items():
        through = p_meta[seq]
        assert without_recent(through[b"FLAGS"]) == without_recent(direct[b"FLAGS"])
        for item in (b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODYSTRUCTURE"):
            assert through[item] == direct[item], (seq, item)
    for seq, direct in d_sections.items():
        through = p_sections[seq]
        for key, value in direct.items():
            if key != b"SEQ":
                assert through[key] == value, (seq, key)
    assert p_search == d_search


def test_bodies_are_byte_identical_to_the_seeded_mail(proxy: ProxyProcess, alice: Account) -> None:
    with imap(proxy.host, proxy.port, alice) as client:
        exists = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
        bodies = client.fetch(list(range(1, exists + 1)), ["BODY.PEEK[]"])
    seeded = [m.raw for m in alice.mailboxes["INBOX"]]
    assert sorted(b[b"BODY[]"] for b in bodies.values()) == sorted(seeded)


def test_fetch_responses_put_uid_first(proxy: ProxyProcess, alice: Account) -> None:
    import imaplib

    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    client.login(alice.user, alice.password)
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1:3", "(FLAGS RFC822.SIZE)")
    client.logout()
    assert typ == "OK"
    for line in data:
        assert line.split(b" (", 1)[1].startswith(b"UID "), line
