"""A change the upstream could not take yet stays queued, durably, and reaches the
upstream once it is back — after a reconnect, and after the proxy was killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay


def _upstream_flags(dovecot: Dovecot, account: Account, seq: int) -> tuple[bytes, ...]:
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.select_folder("INBOX", readonly=True)
        direct.use_uid = False
        return direct.fetch([seq], ["FLAGS"])[seq][b"FLAGS"]


def _wait_for_flag(
    dovecot: Dovecot, account: Account, seq: int, flag: bytes, seconds: float = 20
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if flag in _upstream_flags(dovecot, account, seq):
            return True
        time.sleep(0.3)
    return False


def _store_while_cut(client: IMAPClient, relay: Relay, seq: int, flag: bytes) -> str:
    relay.cut()
    try:
        client.add_flags([seq], [flag])
    except IMAPClientError as exc:
        return str(exc)
    return "OK"


def test_queued_change_is_applied_after_the_link_returns(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder("INBOX")
        client.use_uid = False
        answer = _store_while_cut(client, proxy.relay, 3, b"$Queued")
        assert "UNAVAILABLE" in answer and "queued" in answer
        assert b"$Queued" not in _upstream_flags(dovecot, fresh_user, 3)
        proxy.relay.resume()
        assert _wait_for_flag(dovecot, fresh_user, 3, b"$Queued")
        # And the client's own view catches up.
        client.noop()
        assert b"$Queued" in client.fetch([3], ["FLAGS"])[3][b"FLAGS"]


def test_queued_change_survives_kill_9(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        proxy = ProxyProcess(upstream, state).start()
        try:
            with imap(proxy.host, proxy.port, fresh_user) as client:
                client.select_folder("INBOX")
                client.use_uid = False
                assert "queued" in _store_while_cut(client, relay, 4, b"$Survivor")
                assert proxy.pid is not None
                os.kill(proxy.pid, signal.SIGKILL)
        finally:
            proxy.stop()
        relay.resume()
        with (
            ProxyProcess(upstream, state) as restarted,
            imap(restarted.host, restarted.port, fresh_user),
        ):
            assert _wait_for_flag(dovecot, fresh_user, 4, b"$Survivor")
