"""Encryption at rest against the real Dovecot and the real `imapproxy serve --encrypt`.

A message with a marker in its subject and its body is read through the proxy; the
state directory's files must not contain either marker with encryption on, and must
with it off (the control that makes the check honest). Then: a restart, offline with
the right and a wrong password, a password changed upstream (NO [UNAVAILABLE] with the
unlock hint), `imapproxy unlock` with a wrong and then the old password, and the new
password served from the kept cache without a re-download.
"""

from __future__ import annotations

import imaplib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

FAST = ("--login-delay", "0", "--account-idle-timeout", "0")


def _marked(dovecot: Dovecot, account: Account) -> tuple[bytes, bytes, bytes]:
    """Append a message with markers upstream; (subject marker, body marker, raw)."""
    tag = uuid.uuid4().hex[:12]
    subject, body = f"Zebra{tag}".encode(), f"Quagga{tag}".encode()
    raw = (
        b"From: Ann <ann@example.org>\r\nTo: " + account.user.encode() + b"@example.org\r\n"
        b"Subject: " + subject + b"\r\nMessage-ID: <" + tag.encode() + b"@example.org>\r\n"
        b"Date: Mon, 30 Nov 2026 04:00:00 +0000\r\n\r\n" + body + b" is the secret\r\n"
    )
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.append("INBOX", raw)
    return subject, body, raw


def _read_marked(proxy: ProxyProcess, account: Account, subject: bytes) -> bytes:
    """Log in, find the message by its subject, read envelope, headers and body."""
    with imap(proxy.host, proxy.port, account) as client:
        client.select_folder("INBOX", readonly=True)
        envelopes = client.fetch(client.search(), ["ENVELOPE"])
        for uid, item in envelopes.items():
            if item[b"ENVELOPE"].subject == subject:
                read = client.fetch([uid], ["BODY.PEEK[HEADER]", "BODY.PEEK[]"])[uid]
                assert subject in read[b"BODY[HEADER]"]
                return bytes(read[b"BODY[]"])
    raise AssertionError(f"no message {subject!r} through the proxy")


def _on_disk(state: Path, *needles: bytes) -> set[bytes]:
    """Which needles some file of the state directory holds, as plain bytes."""
    found = set()
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found |= {n for n in needles if n in data}
    return found


def _proxy(upstream: str, state: Path, encrypt: bool = True) -> ProxyProcess:
    return ProxyProcess(upstream, state, extra_args=(*FAST, *(["--encrypt"] if encrypt else [])))


@pytest.mark.parametrize("encrypt", [False, True], ids=["clear (control)", "encrypted"])
def test_no_subject_body_or_folder_name_in_the_state_dir(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path, encrypt: bool
) -> None:
    subject, body, raw = _marked(dovecot, fresh_user)
    folder = "Folder" + uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        with _proxy(f"imap+plain://{dovecot.host}:{relay.port}", state, encrypt) as proxy:
            assert _read_marked(proxy, fresh_user, subject) == raw
            with imap(proxy.host, proxy.port, fresh_user) as client:
                client.create_folder(folder)  # a mailbox record and an outbox entry
            proxy.wait_for_log("background sync complete")
        assert proxy.returncode == 0
    found = _on_disk(state, subject, body, folder.encode())
    if encrypt:
        assert found == set()
    else:
        assert found == {subject, body, folder.encode()}


def _login_error(proxy: ProxyProcess, user: str, password: str) -> str | None:
    """None if LOGIN is accepted, else the refusal's text (with its response code)."""
    conn = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        conn.login(user, password)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            conn.shutdown()
    return None


def _unlock(proxy: ProxyProcess, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imapproxy", "unlock", user, "--listen", f"127.0.0.1:{proxy.port}"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(state: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "imapproxy", "status", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (account,) = json.loads(result.stdout)["accounts"]
    return account  # type: ignore[no-any-return]


def test_restart_offline_password_change_and_unlock(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    subject, body, raw = _marked(dovecot, fresh_user)
    user, old = fresh_user.user, fresh_user.password
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with _proxy(upstream, state) as proxy:
            assert _read_marked(proxy, fresh_user, subject) == raw

        # Restarted and offline: the right password opens the cache, a wrong one nothing.
        with _proxy(upstream, state) as proxy:
            relay.cut()
            refused = _login_error(proxy, user, old + "x")
            assert refused is not None and "AUTHENTICATIONFAILED" in refused, refused
            assert _read_marked(proxy, fresh_user, subject) == raw
            relay.resume()

        # Restarted, and the password changed upstream meanwhile.
        new = old + "-changed"
        dovecot.add_user(user, new)
        with _proxy(upstream, state) as proxy:
            deadline = time.monotonic() + 5
            while True:  # Dovecot may take a second to see the new password
                refused = _login_error(proxy, user, new)
                if (refused and "UNAVAILABLE" in refused) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert refused is not None and "[UNAVAILABLE]" in refused, refused
            assert f"imapproxy unlock {user}" in refused, refused

            status = _status(state)
            assert status["encryption"] == "encrypted, locked"
            assert subject.decode() not in json.dumps(status)

            wrong = _unlock(proxy, user, "not-the-password")
            assert wrong.returncode != 0 and "refused" in wrong.stderr, wrong
            assert "UNAVAILABLE" in (_login_error(proxy, user, new) or "")

            done = _unlock(proxy, user, old)
            assert done.returncode == 0, (done.stdout, done.stderr, proxy.log_tail())
            assert "unlocked" in done.stdout

            relay.reset_counters()
            renewed = Account(user, new, fresh_user.mailboxes)
            assert _read_marked(proxy, renewed, subject) == raw
            assert relay.bytes_down < len(raw) * 2 + 20000  # the kept cache, no re-download
            assert body not in proxy.log_text().encode()

        # The new password's wrapping was stored: after a restart, offline, it opens.
        with _proxy(upstream, state) as proxy:
            relay.cut()
            assert _read_marked(proxy, renewed, subject) == raw
            assert _login_error(proxy, user, old) is not None  # the old one's wrapping went
            relay.resume()


def test_a_clear_replica_is_encrypted_in_place_and_survives_compact(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    subject, body, raw = _marked(dovecot, fresh_user)
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with _proxy(upstream, state, encrypt=False) as proxy:
            assert _read_marked(proxy, fresh_user, subject) == raw
        assert _on_disk(state, subject, body) == {subject, body}
        with _proxy(upstream, state) as proxy:
            with imap(proxy.host, proxy.port, fresh_user) as client:
                client.noop()
            proxy.wait_for_log("encrypted (")
        compact = subprocess.run(
            [sys.executable, "-m", "imapproxy", "compact", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert compact.returncode == 0, compact.stderr
        assert _on_disk(state, subject, body) == set()
        # Turned off again: still encrypted, and it still opens (offline too).
        with _proxy(upstream, state, encrypt=False) as proxy:
            relay.cut()
            assert _read_marked(proxy, fresh_user, subject) == raw
            refused = _login_error(proxy, fresh_user.user, "wrong")
            assert refused is not None and "AUTHENTICATIONFAILED" in refused, refused
