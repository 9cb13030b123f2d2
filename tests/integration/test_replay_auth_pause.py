"""Replay pauses when the upstream refuses the stored credentials, and resumes at the
next login with the new password (issue 5: "the password changed elsewhere").

Changes are queued while the link is cut; meanwhile the password is changed on
Dovecot. When the link returns, the proxy reconnects on its own (queued changes keep
it trying) and finds its credentials refused: nothing may be dropped or re-sent with
wrong credentials in a loop; the account is marked, the log says why. A login with the
new password resumes the replay, and each change reaches the upstream exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.clients import imap
from tests.integration.test_writes import _by_message_id, _message, _upstream
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot

WAIT = 30.0
PAUSED_LOG = "paused: the upstream refused the stored credentials"


def _until(done: Callable[[], Any], what: str, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = done()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; log:\n{log()}"
        time.sleep(0.3)


def _status(state_dir: Path, user: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "imapproxy", "status", "--json", "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {a["user"]: a for a in json.loads(result.stdout)["accounts"]}[user]


def test_replay_pauses_on_refused_credentials_and_resumes_after_a_new_login(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    assert proxy.relay is not None
    draft = _message("written on the plane", "auth-pause-draft@imapproxy.test")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        view = _by_message_id(client, "INBOX")  # online: metadata cached
        _by_message_id(client, "Drafts")
        target_mid = min(mid for mid, (_, flags) in view.items() if b"\\Flagged" not in flags)
        client.select_folder("INBOX")

        proxy.relay.cut()
        client.add_flags([view[target_mid][0]], [b"\\Flagged"])
        client.append("Drafts", draft, flags=[b"\\Draft"])
        queued = _status(proxy.state_dir, fresh_user.user)["queued_changes"]
        assert queued == 2, proxy.log_text()

        new_password = fresh_user.password + "-changed"
        dovecot.add_user(fresh_user.user, new_password)
        time.sleep(1.5)  # Dovecot re-reads the passwd file within a second
        proxy.relay.resume()

        # The proxy reconnects by itself; the upstream refuses the old password.
        _until(
            lambda: PAUSED_LOG in proxy.log_text(), "the proxy to pause the replay", proxy.log_text
        )
        paused = _status(proxy.state_dir, fresh_user.user)
        assert paused["queued_changes"] == 2, paused
        assert paused["refused_changes"] == 0, paused
        assert paused["replay_paused"], paused
        assert "credentials" in paused["replay_paused"]["reason"], paused

        # Paused means paused: no retry loop with the refused password.
        attempts = proxy.log_text().count(PAUSED_LOG)
        time.sleep(3)
        assert proxy.log_text().count(PAUSED_LOG) == attempts
        assert _status(proxy.state_dir, fresh_user.user)["queued_changes"] == 2

    new = dataclasses.replace(fresh_user, password=new_password)
    upstream_inbox = _upstream(dovecot, new, "INBOX")
    assert b"\\Flagged" not in upstream_inbox[target_mid][1]
    assert b"auth-pause-draft@imapproxy.test" not in _upstream(dovecot, new, "Drafts")

    # A login with the new password resumes the replay.
    with imap(proxy.host, proxy.port, new) as client:
        client.noop()
        _until(
            lambda: _status(proxy.state_dir, new.user)["queued_changes"] == 0,
            "the replay to finish after the new login",
            proxy.log_text,
        )
    assert "resumes after a new login" in proxy.log_text()
    resumed = _status(proxy.state_dir, new.user)
    assert not resumed["replay_paused"] and resumed["refused_changes"] == 0, resumed
    assert b"\\Flagged" in _upstream(dovecot, new, "INBOX")[target_mid][1]
    with imap(dovecot.host, dovecot.port, new) as direct:
        direct.select_folder("Drafts", readonly=True)
        found = direct.search(["HEADER", "Message-ID", "auth-pause-draft@imapproxy.test"])
    assert len(found) == 1, f"the draft reached the upstream {len(found)} times"
