"""Several gateway hosts behind Dovecot's own IMAP proxy (the sharding mechanism large
providers use): a passwd-file passdb line ``user:::::::proxy=y nopassword=y host=H
port=P`` sends each user to their imapproxy instance, which holds their replica, and
passes the client's password on for it (and then the real upstream) to check.

Here two imapproxy instances share one mail server; a second Dovecot routes alice-like
users to the first and bob-like users to the second. Every session of a user lands on
the same instance, and each user sees only their own mail."""

from __future__ import annotations

import imaplib
import json
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

from tests.support.corpus import make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _route(director: Dovecot, user: str, instance: ProxyProcess) -> None:
    """A passdb line that proxies user to instance (Dovecot reads a new file at once)."""
    line = f"{user}:::::::proxy=y nopassword=y host={instance.host} port={instance.port}\n"
    path = director.paths.passwd / user
    director.paths.passwd.mkdir(mode=0o755, exist_ok=True)
    path.write_text(line, encoding="utf-8")
    path.chmod(0o644)


def _new_user(mail: Dovecot, tag: str) -> tuple[str, str, str]:
    """A user with a small mailbox and one message only they have: (user, password, subject)."""
    user = f"{tag}-{uuid.uuid4().hex[:8]}"
    password = f"{user}-pw"
    mail.add_user(user, password)
    seed_messages(mail.mail_root(user), "INBOX", make_messages(5, seed=7))
    open_mailboxes(mail, user, ["INBOX"])
    subject = f"only for {user}"
    message = EmailMessage()
    message["From"] = "someone@example.org"
    message["To"] = f"{user}@example.org"
    message["Subject"] = subject
    message.set_content("private\n")
    with imaplib.IMAP4(mail.host, mail.port, timeout=30) as client:
        client.login(user, password)
        client.append("INBOX", "", None, message.as_bytes().replace(b"\n", b"\r\n"))
    return user, password, subject


def _subjects(host: str, port: int, user: str, password: str) -> set[str]:
    with imaplib.IMAP4(host, port, timeout=30) as client:
        typ, _ = client.login(user, password)
        assert typ == "OK"
        client.select("INBOX", readonly=True)
        typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        return {
            part[1].decode().split(":", 1)[1].strip() for part in data if isinstance(part, tuple)
        }


def _accounts_of(instance: ProxyProcess) -> set[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imapproxy",
            "status",
            "--json",
            "--state-dir",
            str(instance.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {account["user"] for account in json.loads(result.stdout)["accounts"]}


def test_users_are_sharded_across_instances_behind_a_dovecot_proxy(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    users = [_new_user(dovecot, "east"), _new_user(dovecot, "west"), _new_user(dovecot, "east")]
    upstream = f"imap+plain://{dovecot.host}:{dovecot.port}"
    with (
        ProxyProcess(upstream, tmp_path / "one") as one,
        ProxyProcess(upstream, tmp_path / "two") as two,
        Dovecot() as director,  # its own temp dir: the mail user must traverse it
    ):
        home = {users[0][0]: one, users[1][0]: two, users[2][0]: one}
        for user, _, _ in users:
            _route(director, user, home[user])

        for _ in range(2):  # a second session of each user lands on the same instance
            for user, password, subject in users:
                seen = _subjects(director.host, director.port, user, password)
                assert subject in seen
                others = {s for _, _, s in users if s != subject}
                assert not seen & others, f"{user} saw someone else's mail"

        assert _accounts_of(one) == {users[0][0], users[2][0]}
        assert _accounts_of(two) == {users[1][0]}
        assert "Started proxying" in director.log_tail(200)

        # A wrong password is refused at the instance (and so by the director).
        client = imaplib.IMAP4(director.host, director.port, timeout=30)
        try:
            try:
                client.login(users[0][0], "wrong")
                raise AssertionError("a wrong password was accepted")
            except imaplib.IMAP4.error:
                pass
        finally:
            client.shutdown()
