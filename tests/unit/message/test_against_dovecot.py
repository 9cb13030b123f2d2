"""Compare extract_section with a real Dovecot 2.3, section by section, byte by byte.

The proxy answers FETCH BODY[...] from its cache, so its answers must be exactly what
the upstream would have sent.  This starts a private Dovecot (``tests.support.dovecot``),
stores every corpus message, and for every section path checks that applying
``extract_section`` to Dovecot's own ``BODY[]`` gives Dovecot's ``BODY[section]``.  It
fails, never skips, when Dovecot is missing: ``./scripts/test`` installs it.
"""

from __future__ import annotations

import imaplib
import os
from collections.abc import Iterator

import pytest

from imapproxy.message import extract_section
from tests.support.dovecot import Dovecot
from tests.unit.message.corpus import CORPUS, EDGE, SECTIONS, parse_section

pytestmark = pytest.mark.integration

MESSAGES: dict[str, bytes] = {**CORPUS, **EDGE}
USER, PASSWORD = "sections", "sections-pw"


def _store(dovecot: Dovecot, messages: list[bytes]) -> None:
    """Write Maildir files without S=/W= sizes so Dovecot works the sizes out itself.

    (``seed_mailbox`` writes W=<file size>; for LF-only files that is wrong and Dovecot
    then serves BODY[] with bare LFs, which no real upstream does.)
    """
    root = dovecot.mail_root(USER)
    owner = dovecot.mail_user
    for sub in ("", "cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index, raw in enumerate(messages):
        (root / "cur" / f"1700000000.M{index:04d}P1.sections:2,S").write_bytes(raw)
    for path in [root.parent, root, *root.rglob("*")]:
        os.chown(path, owner.uid, owner.gid)


def fetch_section(conn: imaplib.IMAP4, uid: int, section: str) -> bytes | None:
    """Dovecot's bytes for ``BODY[section]``: the literal, ``b""`` for ``""``, None for NIL."""
    typ, data = conn.uid("FETCH", str(uid), f"(BODY.PEEK[{section}])")
    assert typ == "OK", data
    item = data[0]
    if isinstance(item, tuple):
        return item[1]
    assert isinstance(item, bytes), data
    tail = item.decode().rsplit(" ", 1)[-1].rstrip(")")
    assert tail in ('""', "NIL"), item
    return b"" if tail == '""' else None


@pytest.fixture(scope="module")
def imap() -> Iterator[imaplib.IMAP4]:
    """One Dovecot with the whole corpus in INBOX, selected read-only."""
    with Dovecot(users={USER: PASSWORD}) as dovecot:
        _store(dovecot, list(MESSAGES.values()))
        conn = imaplib.IMAP4(dovecot.host, dovecot.port)
        conn.login(USER, PASSWORD)
        conn.select("INBOX", readonly=True)
        try:
            yield conn
        finally:
            conn.logout()


@pytest.mark.parametrize("uid,name", list(enumerate(MESSAGES, 1)), ids=list(MESSAGES))
def test_every_section_matches_dovecot(imap: imaplib.IMAP4, uid: int, name: str) -> None:
    full = fetch_section(imap, uid, "")
    assert full is not None
    mismatches = []
    for section in SECTIONS:
        expected = fetch_section(imap, uid, section)
        got = extract_section(full, *parse_section(section))
        # Dovecot never answers NIL here: a part that does not exist is "".
        assert expected is not None, section
        if (b"" if got is None else got) != expected:
            mismatches.append(f"BODY[{section}]: dovecot {expected!r}, ours {got!r}")
    assert not mismatches, "\n".join(mismatches)


def test_mime_without_part_number_is_bad(imap: imaplib.IMAP4) -> None:
    with pytest.raises(imaplib.IMAP4.error, match="Invalid BODY"):
        imap.uid("FETCH", "1", "(BODY.PEEK[MIME])")
