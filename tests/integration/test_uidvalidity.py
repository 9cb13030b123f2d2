"""An upstream UIDVALIDITY reset does not become a client-visible reset: messages are
re-linked by INTERNALDATE and size, keep their local UIDs, and are not downloaded again."""

from __future__ import annotations

from pathlib import Path

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay


def _snapshot(proxy: ProxyProcess, account: Account) -> tuple[int, dict[int, bytes]]:
    with imap(proxy.host, proxy.port, account) as client:
        selected = client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        bodies = client.fetch(uids, ["BODY.PEEK[]"])
        return selected[b"UIDVALIDITY"], {uid: item[b"BODY[]"] for uid, item in bodies.items()}


def _upstream_uidvalidity(dovecot: Dovecot, account: Account) -> int:
    with imap(dovecot.host, dovecot.port, account) as direct:
        return direct.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]


def test_upstream_uidvalidity_change_is_absorbed(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with ProxyProcess(upstream, state) as proxy:
            before_validity, before = _snapshot(proxy, fresh_user)
            # The background sync completes the replica (other folders' metadata) too.
            proxy.wait_for_log("background sync complete")
        upstream_before = _upstream_uidvalidity(dovecot, fresh_user)
        # Make Dovecot forget its UIDs: without uidlist and index it renumbers from 1
        # under a new UIDVALIDITY.
        inbox = dovecot.mail_root(fresh_user.user)
        for path in inbox.iterdir():
            if path.name.startswith(("dovecot-uidlist", "dovecot.index")):
                path.unlink()
        assert _upstream_uidvalidity(dovecot, fresh_user) != upstream_before

        relay.reset_counters()
        with ProxyProcess(upstream, state) as proxy:
            after_validity, after = _snapshot(proxy, fresh_user)
    assert after_validity == before_validity
    assert after == before
    body_bytes = sum(len(body) for body in before.values())
    assert relay.bytes_down < body_bytes / 10, relay.bytes_down
