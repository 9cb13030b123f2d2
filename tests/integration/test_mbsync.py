"""mbsync (isync) keeping a local Maildir through the proxy while the link goes down
and comes back: what the user changed locally while offline reaches the upstream once,
and after the next online run the Maildir and the upstream agree."""

from __future__ import annotations

import email
import subprocess
import time
from pathlib import Path

from tests.integration.clients import imap
from tests.integration.test_writes import _message, _upstream
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot

MAILDIR_FLAGS = {"D": b"\\Draft", "F": b"\\Flagged", "R": b"\\Answered", "S": b"\\Seen"}


def _rc(tmp: Path, port: int, account: Account) -> Path:
    maildir = tmp / "Mail"
    maildir.mkdir()
    rc = tmp / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount proxy
Host 127.0.0.1
Port {port}
User {account.user}
Pass {account.password}
SSLType None
AuthMechs LOGIN
Timeout 20

IMAPStore remote
Account proxy

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mail
Far :remote:
Near :local:
Patterns INBOX Drafts
Create Both
Expunge Both
SyncState *
"""
    )
    return rc


def _mbsync(rc: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60, check=False
    )


def _maildir(root: Path, mailbox: str) -> dict[bytes, tuple[Path, set[bytes]]]:
    """Message-ID -> (file, IMAP flags) of a Maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        for path in (root / mailbox / sub).glob("*"):
            message = email.message_from_bytes(path.read_bytes())
            mid = (message["Message-ID"] or "").strip().strip("<>").encode()
            letters = path.name.partition(":2,")[2]
            assert mid not in out, f"duplicate {mid!r} in the Maildir's {mailbox}"
            out[mid] = (path, {MAILDIR_FLAGS[c] for c in letters if c in MAILDIR_FLAGS})
    return out


def _set_letters(path: Path, add: str) -> None:
    base, _, letters = path.name.partition(":2,")
    new = "".join(sorted(set(letters) | set(add)))
    path.rename(path.parent.parent / "cur" / f"{base}:2,{new}")


def _flags(view: dict[bytes, tuple[object, set[bytes]]]) -> dict[bytes, set[bytes]]:
    """The flags a Maildir can hold (keywords like $Label1 have no Maildir letter)."""
    known = set(MAILDIR_FLAGS.values())
    return {mid: set(flags) & known for mid, (_, flags) in view.items()}


def test_mbsync_across_an_offline_period(
    dovecot: Dovecot, make_proxy, fresh_user: Account, tmp_path: Path
) -> None:
    proxy = make_proxy()
    rc = _rc(tmp_path, proxy.port, fresh_user)
    root = tmp_path / "Mail"
    first = _mbsync(rc)
    assert first.returncode == 0, first.stderr
    inbox = _maildir(root, "INBOX")
    assert len(inbox) == len(fresh_user.mailboxes["INBOX"])

    proxy.relay.cut()
    # While offline, the user works in the Maildir: 6 read, 4 flagged, 3 deleted,
    # 2 drafts written.
    order = sorted(inbox)
    unread = [m for m in order if b"\\Seen" not in inbox[m][1]]
    read_now = unread[:6]
    rest = [m for m in order if m not in read_now]
    flag_now = [m for m in rest if b"\\Flagged" not in inbox[m][1]][:4]
    delete_now = [m for m in rest if m not in flag_now][:3]
    assert len(read_now) == 6 and len(flag_now) == 4 and len(delete_now) == 3
    for mid in read_now:
        _set_letters(inbox[mid][0], "S")
    for mid in flag_now:
        _set_letters(inbox[mid][0], "F")
    for mid in delete_now:
        _set_letters(inbox[mid][0], "T")
    drafts_dir = root / "Drafts" / "cur"
    drafts_dir.mkdir(parents=True, exist_ok=True)
    new_drafts = []
    for n in range(2):
        mid = f"mbsync-draft-{n}@imapproxy.test"
        (drafts_dir / f"{int(time.time())}.{n}_{n}.testhost:2,D").write_bytes(
            _message(f"offline draft {n}", mid)
        )
        new_drafts.append(mid.encode())

    offline = _mbsync(rc)
    assert offline.returncode == 0, offline.stderr
    assert _upstream(dovecot, fresh_user, "Drafts").keys().isdisjoint(new_drafts)

    proxy.relay.resume()
    deadline = time.monotonic() + 40
    while True:
        upstream_inbox = _upstream(dovecot, fresh_user, "INBOX")
        if not set(delete_now) & set(upstream_inbox) and all(
            m in _upstream(dovecot, fresh_user, "Drafts") for m in new_drafts
        ):
            break
        assert time.monotonic() < deadline, "the offline changes never reached the upstream"
        with imap(proxy.host, proxy.port, fresh_user) as nudge:  # a session resyncs
            nudge.select_folder("INBOX", readonly=True)
        time.sleep(0.5)

    again = _mbsync(rc)
    assert again.returncode == 0, again.stderr
    for mailbox in ("INBOX", "Drafts"):
        local = _flags(_maildir(root, mailbox))  # (asserts no duplicates)
        upstream = _flags(_upstream(dovecot, fresh_user, mailbox))
        assert local == upstream, mailbox
    upstream_inbox = _flags(_upstream(dovecot, fresh_user, "INBOX"))
    assert len(upstream_inbox) == len(inbox) - 3
    for mid in read_now:
        assert b"\\Seen" in upstream_inbox[mid]
    for mid in flag_now:
        assert b"\\Flagged" in upstream_inbox[mid]
    drafts = _upstream(dovecot, fresh_user, "Drafts")
    for mid in new_drafts:
        assert list(drafts).count(mid) == 1
