"""Prefetch: the policy's bodies become readable offline ahead of time, in the
background while online and at once with `imapproxy prefetch`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.support.corpus import Account, make_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

RUN_TIMEOUT = 40


def test_background_prefetch_makes_recent_bodies_readable_offline(
    dovecot: Dovecot, make_proxy, fresh_user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAPPROXY_PREFETCH_MAX_SIZE", "10K")
    recent = make_messages(12, seed=41)
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        for message in recent:
            direct.append("INBOX", message.raw)  # received now: inside the last 90 days
    small = [m.raw for m in recent if len(m.raw) <= 10 * 1024]
    large = [m.raw for m in recent if len(m.raw) > 10 * 1024]
    assert small and large, [len(m.raw) for m in recent]

    proxy: ProxyProcess = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        proxy.wait_for_log("prefetch: ")
        assert proxy.relay is not None
        proxy.relay.cut()
        client.select_folder("INBOX", readonly=True)
        client.use_uid = False
        first_new = len(fresh_user.mailboxes["INBOX"]) + 1
        bodies = []
        for seq in range(first_new, first_new + len(recent)):
            try:
                bodies.append(client.fetch([seq], ["BODY.PEEK[]"])[seq][b"BODY[]"])
            except client.Error as exc:
                assert "UNAVAILABLE" in str(exc), exc
        # Every body the policy covers is there; those over the size limit are not.
        assert sorted(bodies) == sorted(small)
        # Old mail (2023) is outside the policy: not fetched.
        with pytest.raises(client.Error, match="UNAVAILABLE"):
            client.fetch([1], ["BODY.PEEK[]"])


def _prefetch(
    state: Path, upstream: str, user: str, password: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "imapproxy",
            "prefetch",
            "--state-dir",
            str(state),
            "--upstream",
            upstream,
            "--user",
            user,
            *extra,
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_prefetch_command_before_a_flight(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")  # nothing fetched behind our back
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with ProxyProcess(upstream, state) as proxy, imap(proxy.host, proxy.port, fresh_user) as c:
            c.select_folder("INBOX", readonly=True)

        wrong = _prefetch(state, upstream, fresh_user.user, "wrong-password")
        assert wrong.returncode == 1
        assert wrong.stderr.startswith("imapproxy: error: the upstream refused the login")

        done = _prefetch(
            state,
            upstream,
            fresh_user.user,
            fresh_user.password,
            "--folders",
            "INBOX",
            "--days",
            "100000",
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        inbox = fresh_user.mailboxes["INBOX"]
        assert f"prefetched {len(inbox)} message(s)" in done.stdout, done.stdout
        assert re.search(r"message\(s\), [\d.]+ (KiB|MiB) in [\d.]+ s; 0 already", done.stdout)
        assert fresh_user.password not in done.stdout + done.stderr

        relay.cut()
        with (
            ProxyProcess(upstream, state) as offline,
            imap(offline.host, offline.port, fresh_user) as c,
        ):
            c.select_folder("INBOX", readonly=True)
            c.use_uid = False
            bodies = c.fetch(list(range(1, len(inbox) + 1)), ["BODY.PEEK[]"])
            assert [bodies[i + 1][b"BODY[]"] for i in range(len(inbox))] == [m.raw for m in inbox]
