"""Everything read once is served from the replica: a second session downloads no
header or body again, only the cheap resync of the message list and flags."""

from __future__ import annotations

from pathlib import Path

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

ITEMS = [
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY.PEEK[1]",
]


def _session(proxy: ProxyProcess, account: Account) -> dict[int, dict[bytes, object]]:
    with imap(proxy.host, proxy.port, account) as client:
        client.list_folders()
        client.folder_status("INBOX", [b"MESSAGES", b"UNSEEN"])
        exists = client.select_folder("INBOX")[b"EXISTS"]
        client.use_uid = False
        return client.fetch(list(range(1, exists + 1)), ITEMS)


def test_second_session_downloads_no_content(make_proxy, alice: Account) -> None:
    proxy = make_proxy()
    relay = proxy.relay
    first = _session(proxy, alice)
    proxy.wait_for_log("background sync complete")  # other folders' metadata, once
    first_down = relay.bytes_down
    body_bytes = sum(len(m.raw) for m in alice.mailboxes["INBOX"])
    assert first_down > body_bytes  # the first session really did fetch the bodies upstream

    relay.reset_counters()
    second = _session(proxy, alice)
    assert second == first
    # Only SELECT/LIST/flag resync crosses the link: far less than one body's worth per message.
    assert relay.bytes_down < 4000, relay.bytes_down
    assert relay.bytes_down < body_bytes / 50


def test_replica_survives_restart_without_redownload(
    dovecot: Dovecot, alice: Account, tmp_path: Path
) -> None:
    state = tmp_path / "kept-state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with ProxyProcess(upstream, state) as first_proxy:
            first = _session(first_proxy, alice)
            # The background sync completes the replica (other folders' metadata) too.
            first_proxy.wait_for_log("background sync complete")
        assert first_proxy.returncode == 0
        relay.reset_counters()
        with ProxyProcess(upstream, state) as second_proxy:
            second = _session(second_proxy, alice)
        assert second_proxy.returncode == 0
    assert second == first
    body_bytes = sum(len(m.raw) for m in alice.mailboxes["INBOX"])
    assert relay.bytes_down < body_bytes / 50
