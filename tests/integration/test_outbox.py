"""What the client is told is what happens: a change made while the upstream is
unreachable is applied at once, seen by every session, and reaches the upstream when
it returns; a change committed to the outbox survives a crash (kill -9)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.outbox_entries import commit_flag_change
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay


def _upstream_flags(dovecot: Dovecot, account: Account, seq: int) -> tuple[bytes, ...]:
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.select_folder("INBOX", readonly=True)
        direct.use_uid = False
        return direct.fetch([seq], ["FLAGS"])[seq][b"FLAGS"]


def _wait_for_flag(
    dovecot: Dovecot, account: Account, seq: int, flag: bytes, seconds: float = 30
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if flag in _upstream_flags(dovecot, account, seq):
            return True
        time.sleep(0.3)
    return False


def test_offline_flag_change_is_seen_at_once_and_replayed(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    with (
        imap(proxy.host, proxy.port, fresh_user) as client,
        imap(proxy.host, proxy.port, fresh_user) as other,
    ):
        client.select_folder("INBOX")
        other.select_folder("INBOX")
        client.use_uid = other.use_uid = False
        proxy.relay.cut()
        started = time.monotonic()
        client.add_flags([3], [b"$Offline"])
        assert time.monotonic() - started < 2, "an offline change must not wait on the link"
        assert b"$Offline" in client.get_flags([3])[3]
        other.noop()
        assert b"$Offline" in other.get_flags([3])[3], "other sessions see it at once"
        assert b"$Offline" not in _upstream_flags(dovecot, fresh_user, 3)
        proxy.relay.resume()
        deadline = time.monotonic() + 30
        while b"$Offline" not in _upstream_flags(dovecot, fresh_user, 3):
            assert time.monotonic() < deadline, "never replayed"
            client.noop()
            time.sleep(0.3)
        assert b"$Offline" in client.get_flags([3])[3]


def test_committed_change_survives_kill_9(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        proxy = ProxyProcess(upstream, state).start()
        try:
            with imap(proxy.host, proxy.port, fresh_user) as client:
                client.select_folder("INBOX")
            assert proxy.pid is not None
            os.kill(proxy.pid, signal.SIGKILL)
        finally:
            proxy.stop()
        commit_flag_change(state, upstream, fresh_user.user, "$Survivor")
        with (
            ProxyProcess(upstream, state) as restarted,
            imap(restarted.host, restarted.port, fresh_user),
        ):
            assert _wait_for_flag(dovecot, fresh_user, 1, b"$Survivor")
