"""A mailbox built to tell SORT and THREAD implementations apart.

Every case RFC 5256 and Dovecot's quirks make interesting is here at least once:
reply chains by References and by In-Reply-To, a parent missing from the mailbox,
children arriving before their parents, a reference loop, a duplicate Message-ID,
Re:/Fwd:/[tag]/(fwd)/[fwd: ...] subjects, encoded-word and raw UTF-8 subjects and
names, a missing Date, an unparseable Date, a missing Subject, an empty Subject,
missing To, a group address, several zones, equal keys everywhere (ties go to the
sequence number) and arrival dates that disagree with the sent dates.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.maildir import seed_mailbox

MAILBOX = "Sorting"

# (message-id, date or None, from, to or None, cc or None, subject or None, references,
#  in-reply-to, body length)
_ROWS: list[tuple[str, str | None, str, str | None, str | None, str | None, str, str, int]] = [
    (
        "a1",
        "Mon, 01 Jan 2024 10:00:00 +0000",
        "Alice <alice@example.org>",
        "bob@example.org",
        None,
        "Project kickoff",
        "",
        "",
        100,
    ),
    (
        "a2",
        "Mon, 01 Jan 2024 12:00:00 +0000",
        "Bob <bob@example.org>",
        "alice@example.org",
        "carol@example.org",
        "Re: Project kickoff",
        "",
        "<a1@test>",
        200,
    ),
    (
        "a3",
        "Tue, 02 Jan 2024 09:00:00 +0100",
        "carol@example.org",
        "Alice <alice@example.org>",
        None,
        "RE: Re: project KICKOFF",
        "<a1@test> <a2@test>",
        "",
        150,
    ),
    (
        "a4",
        "Tue, 02 Jan 2024 08:30:00 -0500",
        "Dave <dave@example.net>",
        "team@example.org",
        None,
        "Fwd: Project kickoff",
        "",
        "",
        150,
    ),
    (
        "a5",
        "Wed, 03 Jan 2024 10:00:00 +0000",
        "Alice <alice@example.org>",
        "bob@example.org",
        None,
        "[list] Re: Project kickoff",
        "<gone@test> <a2@test>",
        "",
        300,
    ),
    (
        "b1",
        "Thu, 04 Jan 2024 10:00:00 +0000",
        "=?UTF-8?Q?J=C3=BCrgen?= <jurgen@example.de>",
        "undisclosed-recipients:;",
        None,
        "Budget (fwd)",
        "",
        "",
        120,
    ),
    (
        "b2",
        "Thu, 04 Jan 2024 10:00:00 +0000",
        "Eve <eve@example.org>",
        "bob@example.org",
        None,
        "[FWD: Budget]",
        "",
        "",
        120,
    ),
    (
        "b3",
        "Thu, 04 Jan 2024 10:00:00 +0000",
        "eve@example.org",
        "Bob <bob@example.org>",
        None,
        "Budget",
        "",
        "",
        120,
    ),
    ("c1", None, "Zed <zed@example.org>", "bob@example.org", None, "Notes", "", "", 80),
    ("c2", "not a date at all", "zed@example.org", None, None, None, "", "", 90),
    (
        "c3",
        "Fri, 05 Jan 2024 10:00:00 +0000",
        '"Smith, Ann" <ann@example.org>',
        "bob@example.org",
        "dave@example.net",
        "",
        "",
        "",
        90,
    ),
    (
        "d1",
        "Sat, 06 Jan 2024 10:00:00 +0000",
        "=?ISO-8859-1?Q?=C9milie?= <emilie@example.fr>",
        "alice@example.org",
        None,
        "=?UTF-8?B?w4ljb2xl?= du soir",
        "",
        "",
        110,
    ),
    (
        "d2",
        "Sat, 06 Jan 2024 11:00:00 +0000",
        "Ölaf <olaf@example.se>",
        "alice@example.org",
        None,
        "Re: École du soir",
        "<d1@test>",
        "",
        110,
    ),
    (
        "d3",
        "Sat, 06 Jan 2024 12:00:00 +0000",
        "alice@example.org",
        "=?UTF-8?Q?=C3=89milie?= <emilie@example.fr>",
        None,
        "Re: =?ISO-8859-1?Q?=E9cole?= du   soir",
        "",
        "<d2@test>",
        110,
    ),
    # Children before their parents (moved in later), and a deeper chain.
    (
        "e3",
        "Mon, 08 Jan 2024 12:00:00 +0000",
        "bob@example.org",
        "alice@example.org",
        None,
        "Re: Re: Travel",
        "<e1@test> <e2@test>",
        "",
        140,
    ),
    (
        "e2",
        "Mon, 08 Jan 2024 11:00:00 +0000",
        "carol@example.org",
        "alice@example.org",
        None,
        "Re: Travel",
        "<e1@test>",
        "",
        140,
    ),
    (
        "e1",
        "Mon, 08 Jan 2024 10:00:00 +0000",
        "alice@example.org",
        "bob@example.org",
        None,
        "Travel",
        "",
        "",
        140,
    ),
    (
        "e4",
        "Mon, 08 Jan 2024 13:00:00 +0000",
        "dave@example.net",
        "alice@example.org",
        None,
        "Re: Travel",
        "<e1@test>",
        "",
        160,
    ),
    # A reference loop, and a duplicate Message-ID.
    (
        "f1",
        "Tue, 09 Jan 2024 10:00:00 +0000",
        "bob@example.org",
        "alice@example.org",
        None,
        "Loop one",
        "<f2@test>",
        "",
        100,
    ),
    (
        "f2",
        "Tue, 09 Jan 2024 11:00:00 +0000",
        "bob@example.org",
        "alice@example.org",
        None,
        "Loop two",
        "<f1@test>",
        "",
        100,
    ),
    (
        "a1",
        "Tue, 09 Jan 2024 12:00:00 +0000",
        "mallory@example.org",
        "alice@example.org",
        None,
        "Duplicate id",
        "",
        "",
        100,
    ),
    # Two replies to the same missing message (a dummy root), and two to another missing
    # message with the same subject (two dummies merged by subject).
    (
        "g1",
        "Wed, 10 Jan 2024 10:00:00 +0000",
        "bob@example.org",
        "alice@example.org",
        None,
        "Re: Lunch",
        "<g0@test>",
        "",
        100,
    ),
    (
        "g2",
        "Wed, 10 Jan 2024 11:00:00 +0000",
        "carol@example.org",
        "alice@example.org",
        None,
        "Re: Lunch",
        "<g0@test>",
        "",
        100,
    ),
    (
        "h1",
        "Wed, 10 Jan 2024 12:00:00 +0000",
        "dave@example.net",
        "alice@example.org",
        None,
        "Re: Lunch",
        "<h0@test>",
        "",
        100,
    ),
    (
        "h2",
        "Wed, 10 Jan 2024 13:00:00 +0000",
        "eve@example.org",
        "alice@example.org",
        None,
        "Re: lunch",
        "<h0@test>",
        "",
        100,
    ),
    # Equal keys: same date, same sender, same subject, same size.
    (
        "i1",
        "Thu, 11 Jan 2024 10:00:00 +0200",
        "bob@example.org",
        "carol@example.org",
        None,
        "Status",
        "",
        "",
        100,
    ),
    (
        "i2",
        "Thu, 11 Jan 2024 08:00:00 +0000",
        "bob@example.org",
        "carol@example.org",
        None,
        "status",
        "",
        "",
        100,
    ),
    (
        "i3",
        "Thu, 11 Jan 2024 09:00:00 +0100",
        "Bob <BOB@example.org>",
        "carol@example.org",
        None,
        "Re: [team] Status",
        "",
        "",
        100,
    ),
    (
        "j1",
        "Fri, 12 Jan 2024 10:00:00 +0000",
        "Anna <anna@example.org>, bob@example.org",
        "Zoe <zoe@example.org>, alice@example.org",
        "a@example.org",
        "Fw: [team] [FWD: Plans]",
        "",
        "",
        500,
    ),
    (
        "j2",
        "Fri, 12 Jan 2024 10:00:00 +0000",
        "anna@example.org",
        "zoe@example.org",
        None,
        "Plans",
        "",
        "",
        500,
    ),
]

#: Messages whose arrival date is set apart from their sent date (file mtime).
_ARRIVALS = {"a4": 1_700_000_000, "e1": 1_800_000_000, "i2": 1_600_000_000}


def _raw(
    row: tuple[str, str | None, str, str | None, str | None, str | None, str, str, int], n: int
) -> bytes:
    msgid, date, sender, to, cc, subject, refs, reply_to, length = row
    lines = [f"From: {sender}"]
    if to is not None:
        lines.append(f"To: {to}")
    if cc is not None:
        lines.append(f"Cc: {cc}")
    if subject is not None:
        lines.append(f"Subject: {subject}")
    if date is not None:
        lines.append(f"Date: {date}")
    lines.append(f"Message-ID: <{msgid}@test>")
    if refs:
        lines.append(f"References: {refs}")
    if reply_to:
        lines.append(f"In-Reply-To: {reply_to}")
    lines.append("MIME-Version: 1.0")
    lines.append("Content-Type: text/plain; charset=utf-8")
    header = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    body = (f"message {n} ".encode() * 100)[:length] + b"\r\n"
    return header + body


def messages() -> list[bytes]:
    return [_raw(row, n) for n, row in enumerate(_ROWS, 1)]


def seed(maildir_root: Path) -> None:
    """Write the mailbox, then move some arrival dates away from the sent dates."""
    folder = seed_mailbox(maildir_root, MAILBOX, messages())
    for path in (folder / "cur").iterdir():
        data = path.read_bytes()
        for msgid, when in _ARRIVALS.items():
            if f"Message-ID: <{msgid}@test>".encode() in data and b"Duplicate" not in data:
                os.utime(path, (when, when))
