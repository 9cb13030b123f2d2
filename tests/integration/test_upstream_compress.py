"""COMPRESS=DEFLATE towards the upstream (RFC 4978, issue 6): where the upstream offers
it (Dovecot with imap_zlib), the proxy's link is deflated both ways, the answers are
the same as Dovecot's, and the bytes on the wire are a fraction of the plain ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.integration.clients import imap
from tests.support.corpus import Account, seed_standard_account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

ITEMS = ["FLAGS", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]"]


@pytest.fixture(scope="module")
def dovecots() -> Iterator[tuple[Dovecot, Dovecot]]:
    """The same mail behind a Dovecot that offers COMPRESS and one that does not."""
    with Dovecot(compress=True) as deflating, Dovecot() as plain:
        yield deflating, plain


def _account(server: Dovecot, user: str) -> Account:
    server.add_user(user, f"{user}-pw")
    return Account(user, f"{user}-pw", seed_standard_account(server, user))


def _messages(client: IMAPClient) -> list[tuple[object, ...]]:
    """INBOX's messages as a client sees them, without UIDs (the proxy has its own)."""
    fetched = client.fetch(client.search(["ALL"]), ITEMS)
    return sorted(
        (repr(m[b"ENVELOPE"]), m[b"RFC822.SIZE"], m[b"BODY[]"], repr(m[b"BODYSTRUCTURE"]))
        for m in fetched.values()
    )


def _session(proxy: ProxyProcess, account: Account) -> list[tuple[object, ...]]:
    with imap(proxy.host, proxy.port, account) as client:
        client.select_folder("INBOX", readonly=True)
        seen = _messages(client)
        client.select_folder("INBOX")  # and a write, which goes up compressed too
        client.add_flags(client.search(["ALL"])[:3], [b"$Compressed"])
        return seen


def test_the_link_is_deflated_where_the_upstream_offers_it(
    dovecots: tuple[Dovecot, Dovecot], tmp_path: Path
) -> None:
    deflating, plain = dovecots
    user = f"user-{uuid.uuid4().hex[:10]}"
    accounts = {server: _account(server, user) for server in (deflating, plain)}
    upstream_bytes = {}
    for server, name in ((deflating, "deflate"), (plain, "plain")):
        with (
            Relay(server.host, server.port) as relay,
            ProxyProcess(
                f"imap+plain://{server.host}:{relay.port}", tmp_path / f"state-{name}"
            ) as proxy,
        ):
            through = _session(proxy, accounts[server])
            with imap(server.host, server.port, accounts[server]) as direct:
                direct.select_folder("INBOX", readonly=True)
                assert _messages(direct) == through
                assert len(direct.search(["KEYWORD", "$Compressed"])) == 3
            upstream_bytes[name] = relay.bytes_down
            assert ("upstream refused COMPRESS" in proxy.log_text()) is False
    # The same mail, the same session: deflated, the upstream sends far fewer bytes.
    assert upstream_bytes["deflate"] * 2 < upstream_bytes["plain"], upstream_bytes
    print(f"upstream bytes, same session: {upstream_bytes}")
