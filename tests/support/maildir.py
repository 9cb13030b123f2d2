"""Writing messages straight into a Dovecot Maildir++ tree.

APPEND over IMAP costs a round trip and an index update per message; writing files into
``cur/`` and letting Dovecot discover them on the next SELECT is orders of magnitude
faster, which is what makes 10,000-message mailboxes practical in tests.

Layout facts (checked against Dovecot 2.3 with namespace separator ``/`` by creating
mailboxes over IMAP and listing the result): INBOX is the Maildir root itself; mailbox
``Archive/2024`` is directory ``.Archive.2024``; non-ASCII names are stored modified UTF-7
encoded (``받은편지함`` -> ``.&vBvHQNO4ycDVaA-``); a ``.`` in a mailbox name is refused.
Keywords are letters ``a``..``z`` in the file name, mapped by ``dovecot-keywords``.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterable, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path

from tests.support import mutf7
from tests.support.dovecot_config import MailUser, resolve_mail_user

#: System flags and their Maildir info letters.
SYSTEM_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
MAX_KEYWORDS = 26
_DATE_RE = re.compile(rb"^Date:[ \t]*(.+?)\r?$", re.MULTILINE | re.IGNORECASE)
# One counter and base time per process, so file names (and thus UIDs) follow seeding order
# even across several calls for the same mailbox.
_sequence = itertools.count()
_BASE_SECS = int(time.time())

#: Per message, either a space separated string (``"\\Seen $Label1"``) or a list of flags.
FlagSpec = str | Iterable[str]


def mailbox_dir(maildir_root: Path, mailbox: str) -> Path:
    """The directory holding IMAP mailbox ``mailbox`` (``/`` separated, Unicode)."""
    if mailbox.upper() == "INBOX":
        return maildir_root
    if "." in mailbox or mailbox.startswith("/") or mailbox.endswith("/"):
        raise ValueError(f"mailbox name not representable in Maildir++: {mailbox!r}")
    return maildir_root / ("." + mutf7.encode(mailbox).replace("/", "."))


def _make_dirs(path: Path, is_folder: bool, owner: MailUser) -> None:
    for sub in (path, path / "cur", path / "new", path / "tmp"):
        sub.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(sub, owner.uid, owner.gid)
    if is_folder:
        marker = path / "maildirfolder"
        marker.touch()
        os.chown(marker, owner.uid, owner.gid)


def _keyword_letters(folder: Path, keywords: set[str], owner: MailUser) -> dict[str, str]:
    """Map keywords to letters, extending ``dovecot-keywords`` (format: ``<index> <name>``)."""
    path = folder / "dovecot-keywords"
    known: dict[str, int] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            index, _, name = line.partition(" ")
            if index.isdigit() and name:
                known[name] = int(index)
    for keyword in sorted(keywords - known.keys()):
        known[keyword] = max(known.values(), default=-1) + 1
    if max(known.values(), default=0) >= MAX_KEYWORDS:
        raise ValueError(f"Maildir supports at most {MAX_KEYWORDS} keywords per mailbox")
    if keywords:
        path.write_text(
            "".join(f"{i} {k}\n" for k, i in sorted(known.items(), key=lambda kv: kv[1]))
        )
        os.chown(path, owner.uid, owner.gid)
    return {k: chr(ord("a") + i) for k, i in known.items()}


def _split_flags(spec: FlagSpec) -> list[str]:
    return spec.split() if isinstance(spec, str) else list(spec)


def _info(flags: list[str], letters: dict[str, str]) -> str:
    try:
        system = "".join(sorted(SYSTEM_FLAG_LETTERS[f] for f in flags if f.startswith("\\")))
    except KeyError as exc:
        raise ValueError(f"unknown system flag {exc.args[0]}") from None
    keywords = "".join(sorted(letters[f] for f in flags if not f.startswith("\\")))
    return system + keywords


def _write_file(path: Path, data: bytes, owner: MailUser) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)


def _message_time(raw: bytes, fallback: float) -> float:
    """The message's Date header as a timestamp, so the file mtime (INTERNALDATE) matches."""
    header_end = raw.find(b"\r\n\r\n")
    match = _DATE_RE.search(raw, 0, header_end if header_end >= 0 else len(raw))
    if match:
        try:
            return parsedate_to_datetime(match.group(1).decode("ascii", "replace")).timestamp()
        except (TypeError, ValueError):
            pass
    return fallback


def seed_mailbox(
    maildir_root: Path,
    mailbox: str,
    messages: Sequence[bytes],
    flags: Sequence[FlagSpec] | None = None,
    owner: MailUser | None = None,
) -> Path:
    """Write ``messages`` into ``mailbox`` with per-message ``flags``; return its directory.

    Files go through ``tmp/`` and are renamed into ``cur/`` so a running Dovecot never sees
    a partial message. File names sort in list order (``<secs>.M<usecs>``, which Dovecot
    orders by), so UIDs are assigned in list order on the next sync. An empty list just
    creates the mailbox. ``owner`` defaults to the account Dovecot accesses mail as.
    """
    owner = owner or resolve_mail_user()
    if flags is not None and len(flags) != len(messages):
        raise ValueError("flags must have one entry per message")
    per_message = [_split_flags(f) for f in flags] if flags is not None else [[]] * len(messages)
    folder = mailbox_dir(maildir_root, mailbox)
    _make_dirs(maildir_root, False, owner)
    _make_dirs(folder, folder != maildir_root, owner)
    keywords = {f for fl in per_message for f in fl if not f.startswith("\\")}
    letters = _keyword_letters(folder, keywords, owner)
    now = time.time()
    pid = os.getpid()
    tmp_dir, cur_dir = folder / "tmp", folder / "cur"
    for raw, message_flags in zip(messages, per_message, strict=True):
        seq = next(_sequence)
        secs, usecs = divmod(seq, 1_000_000)
        name = f"{_BASE_SECS + secs}.M{usecs}P{pid}Q{seq}.imapproxy-seed,S={len(raw)},W={len(raw)}"
        tmp_path = tmp_dir / name
        _write_file(tmp_path, raw, owner)
        mtime = _message_time(raw, now)
        os.utime(tmp_path, (mtime, mtime))
        os.rename(tmp_path, cur_dir / f"{name}:2,{_info(message_flags, letters)}")
    return folder
