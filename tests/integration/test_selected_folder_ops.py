"""DELETE and RENAME of the mailbox the proxy's upstream connection has selected.

The proxy's one upstream connection IDLEs on the mailbox a client selected. Dovecot
answers a DELETE of the mailbox its own session has selected by disconnecting it
("selected mailbox was deleted"); the proxy must leave that mailbox first, so the
connection stays usable and nothing the client does next sees stale state.
"""

from __future__ import annotations

from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _names(lines: list[str]) -> set[str]:
    return {line.rsplit(" ", 1)[1].strip('"') for line in lines if line.startswith("* LIST")}


def _upstream_names(dovecot: Dovecot, account: Account) -> set[str]:
    with RawClient(dovecot.host, dovecot.port, account.user, account.password) as direct:
        return _names(direct.ok('LIST "" "*"'))


def _link_never_lost(proxy: ProxyProcess) -> None:
    """The upstream connection was never dropped (Dovecot drops a session whose
    selected mailbox is deleted under it)."""
    log = proxy.log_text().lower()
    assert "lost" not in log and "unavailable" not in log, log


def test_delete_then_create_of_the_watched_mailbox(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        client.ok("CREATE Doomed")
        client.append("Doomed", "first")
        client.ok("SELECT Doomed")  # the upstream link now watches (IDLEs on) Doomed
        client.ok("NOOP")
        client.ok("UNSELECT")
        client.ok("DELETE Doomed")
        assert "Doomed" not in _names(client.ok('LIST "" "*"'))
        client.ok("CREATE Doomed")
        assert "Doomed" in _names(client.ok('LIST "" "*"'))
        selected = client.ok("SELECT Doomed")
        assert "* 0 EXISTS" in selected, selected
        client.append("Doomed", "second")
        assert client.ok("SEARCH ALL") == ["* SEARCH 1"]
    assert "Doomed" in _upstream_names(dovecot, fresh_user)
    _link_never_lost(proxy)


def test_delete_of_the_selected_mailbox_by_the_selecting_client(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        client.ok("CREATE Here")
        client.ok("SELECT Here")
        client.ok("DELETE Here")
        assert "Here" not in _names(client.ok('LIST "" "*"'))
        client.ok("CREATE Here")
        assert "Here" in _names(client.ok('LIST "" "*"'))
        client.ok("SELECT INBOX")
    assert "Here" in _upstream_names(dovecot, fresh_user)
    _link_never_lost(proxy)


def test_rename_of_the_watched_mailbox_keeps_the_link_usable(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        client.ok("CREATE Old")
        client.append("Old", "kept")
        client.ok("SELECT Old")
        client.ok("RENAME Old New")
        names = _names(client.ok('LIST "" "*"'))
        assert "New" in names and "Old" not in names
        client.ok("CREATE Old")
        client.append("New", "after")
        selected = client.ok("SELECT New")
        assert "* 2 EXISTS" in selected, selected
    upstream = _upstream_names(dovecot, fresh_user)
    assert {"New", "Old"} <= upstream
    _link_never_lost(proxy)


def test_delete_while_another_session_has_it_selected(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with (
        RawClient(proxy.host, proxy.port, user, password) as a,
        RawClient(proxy.host, proxy.port, user, password) as b,
    ):
        b.ok("CREATE Shared")
        b.append("Shared", "one")
        a.ok("SELECT Shared")
        b.ok("DELETE Shared")
        b.ok("CREATE Shared")
        assert "Shared" in _names(b.ok('LIST "" "*"'))
        # A hears its mailbox closed under it; the new one is empty and selectable.
        untagged, _ = a.command("NOOP")
        assert any("[CLOSED]" in line for line in untagged), untagged
        assert "* 0 EXISTS" in a.ok("SELECT Shared")
        b.append("Shared", "two")
        assert "* 1 EXISTS" in a.ok("NOOP")
        assert a.ok("SEARCH ALL") == ["* SEARCH 1"]
    assert "Shared" in _upstream_names(dovecot, fresh_user)
    _link_never_lost(proxy)
