"""CREATE-SPECIAL-USE (RFC 6154 §3): ``CREATE x (USE (\\Archive))`` goes to the upstream
through the outbox, online and offline, and is offered only when the upstream offers it.

Dovecot 2.3 does not record special uses given to CREATE (it accepts the parameter and
ignores it), so the upstream side here is a Dovecot that merely announces
CREATE-SPECIAL-USE: what it proves is that the proxy offers the extension, creates the
mailbox upstream with it, refuses what it must, and shows the use from its replica
while the upstream cannot be asked. The command sent upstream is checked in
tests/unit/outbox (the formatted ``CREATE … (USE (…))``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.raw import RawClient
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay


@pytest.fixture(scope="module")
def announcing() -> Iterator[Dovecot]:
    with Dovecot(extra_capabilities=("CREATE-SPECIAL-USE",)) as server:
        yield server


def _user(dovecot: Dovecot) -> tuple[str, str]:
    user = f"user-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user, f"{user}-pw")
    return user, f"{user}-pw"


def _names(client: RawClient, command: str = 'LIST "" "*"') -> set[str]:
    return {re.sub(r'^\* LIST \([^)]*\) "/" ', "", line).strip('"') for line in client.ok(command)}


def test_create_with_a_use_reaches_the_upstream_online_and_offline(
    announcing: Dovecot, tmp_path: Path
) -> None:
    user, password = _user(announcing)
    with Relay(announcing.host, announcing.port) as relay:
        proxy = ProxyProcess(f"imap+plain://{relay.host}:{relay.port}", tmp_path / "state")
        proxy.relay = relay
        with proxy, RawClient(proxy.host, proxy.port, user, password) as client:
            assert "CREATE-SPECIAL-USE" in client.ok("CAPABILITY")[0].split()
            client.ok('CREATE "Old mail" (USE (\\archive))')
            _, tagged = client.command('CREATE "Odd" (USE (\\Foo))')
            assert tagged.startswith("NO [USEATTR]"), tagged
            relay.cut()
            client.ok('CREATE "Later" (USE (\\Drafts))')
            # Offline, LIST shows the use the replica holds.
            rows = client.ok('LIST (SPECIAL-USE) "" "*"')
            assert '* LIST (\\Drafts) "/" "Later"' in rows, rows
            relay.resume()
            names = _upstream_names_once_replayed(announcing, client, user, password)
    assert {"Old mail", "Later"} <= names
    assert "Odd" not in names


def _upstream_names_once_replayed(
    dovecot: Dovecot, client: RawClient, user: str, password: str
) -> set[str]:
    """Dovecot's folders once the queued CREATE arrived (a LIST through the proxy
    replays the outbox first), or after 20 s."""
    deadline = time.monotonic() + 20
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        while True:
            names = _names(direct)
            if "Later" in names or time.monotonic() > deadline:
                return names
            client.ok('LIST "" "Later"')
            time.sleep(0.2)


def test_without_the_upstream_extension_it_is_not_offered_and_refused(
    dovecot: Dovecot, proxy: ProxyProcess
) -> None:
    user, password = _user(dovecot)
    with RawClient(proxy.host, proxy.port, user, password) as client:
        assert "CREATE-SPECIAL-USE" not in client.ok("CAPABILITY")[0].split()
        _, tagged = client.command('CREATE "Kept" (USE (\\Archive))')
        client.ok('CREATE "Plain"')
        names = _names(client)
    assert tagged.startswith("NO [USEATTR]"), tagged
    assert "Kept" not in names and "Plain" in names
