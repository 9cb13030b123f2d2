"""Several upstreams behind one proxy (``serve --config``), against two real Dovecots.

Logins land on the upstream the file routes them to (by login pattern, or by the
address the client connected to), each sees only its own upstream's mail, even with
the same login name on both, and a login no upstream takes is refused without any
upstream hearing of it. Accounts no session uses are closed (their upstream
connection goes) and come back at the next login, with nothing queued lost.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from imapproxy.account import LIST_REFRESH_DELAY
from tests.integration.clients import imap
from tests.integration.conftest import ProxyFactory
from tests.support.configured_proxy import ConfiguredProxy
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK, free_port
from tests.support.outbox_entries import commit_flag_change
from tests.support.relay import Relay

USERS_A = {"alice@a.test": "alice-pw", "carol": "carol-pw"}
USERS_B = {"bob@b.test": "bob-pw", "carol": "carol-pw"}  # same name, same password on B


def _seed(server: Dovecot, label: str) -> None:
    """Three messages per user whose subjects say which upstream they live on."""
    for user, password in server.users.items():
        with imap(server.host, server.port, Account(user, password, {})) as client:
            for n in range(3):
                body = (
                    f"From: x@{label}.test\r\nTo: {user}\r\nSubject: on {label} #{n}\r\n"
                    f"Message-ID: <{label}-{n}-{user}@test>\r\n\r\nhello from {label}\r\n"
                )
                client.append("INBOX", body.encode())


@pytest.fixture(scope="module")
def upstream_a() -> Iterator[Dovecot]:
    with Dovecot(users=USERS_A) as server:
        _seed(server, "A")
        yield server


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[Dovecot]:
    with Dovecot(users=USERS_B) as server:
        _seed(server, "B")
        yield server


@pytest.fixture
def relays(upstream_a: Dovecot, upstream_b: Dovecot) -> Iterator[tuple[Relay, Relay]]:
    with Relay(upstream_a.host, upstream_a.port) as a, Relay(upstream_b.host, upstream_b.port) as b:
        yield a, b


ProxyMaker = Callable[[str, list[int]], ConfiguredProxy]


@pytest.fixture
def make_configured(tmp_path: Path) -> Iterator[ProxyMaker]:
    started: list[ConfiguredProxy] = []

    def make(upstreams: str, ports: list[int], server: str = "") -> ConfiguredProxy:
        state = tmp_path / f"state-{len(started)}"
        listen = ", ".join(f'"{LOOPBACK}:{p}"' for p in ports)
        text = f'[server]\nstate_dir = "{state}"\nlisten = [{listen}]\n{server}\n'
        path = tmp_path / f"imapproxy-{len(started)}.toml"
        path.write_text(text + textwrap.dedent(upstreams), encoding="utf-8")
        proxy = ConfiguredProxy(path, state, ports)
        started.append(proxy)
        return proxy.start()

    yield make  # type: ignore[misc]
    for proxy in started:
        proxy.stop()


def _by_pattern(relays: tuple[Relay, Relay]) -> str:
    a, b = relays
    return f"""
    [[upstream]]
    name = "a"
    url = "imap+plain://{LOOPBACK}:{a.port}"
    logins = ["*@a.test"]

    [[upstream]]
    name = "b"
    url = "imap+plain://{LOOPBACK}:{b.port}"
    logins = ["*@B.TEST"]
    """


def _settled(count: Callable[[], int]) -> int:
    """A counter's value once it has not moved for longer than the proxy's delayed work
    (the folder list is fetched again once the link has been quiet LIST_REFRESH_DELAY,
    checked every LIST_REFRESH_DELAY, after NOTIFY first covers it)."""
    quiet = 2 * LIST_REFRESH_DELAY + 0.5
    value = count()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(quiet)
        if count() == value:
            return value
        value = count()
    return value


def _subjects(client: IMAPClient) -> set[str]:
    client.select_folder("INBOX", readonly=True)
    fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    return {
        item[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().removeprefix("Subject: ")
        for item in fetched.values()
    }


def _on(label: str) -> set[str]:
    return {f"on {label} #{n}" for n in range(3)}


def test_logins_land_on_the_upstream_their_pattern_names(
    make_configured: ProxyMaker, relays: tuple[Relay, Relay]
) -> None:
    relay_a, relay_b = relays
    proxy = make_configured(_by_pattern(relays), [free_port()])
    # Nobody takes c.test: refused like a wrong password, and no upstream heard of it.
    with imap(proxy.host, proxy.port) as client, pytest.raises(LoginError) as refused:
        client.login("eve@c.test", "carol-pw")
    assert b"AUTHENTICATIONFAILED" in str(refused.value).encode()
    assert (relay_a.bytes_up, relay_b.bytes_up) == (0, 0)
    assert (relay_a.active_connections, relay_b.active_connections) == (0, 0)

    alice = Account("alice@a.test", "alice-pw", {})
    bob = Account("bob@b.test", "bob-pw", {})
    with (
        imap(proxy.host, proxy.port, alice) as client_a,
        imap(proxy.host, proxy.port, bob) as client_b,
    ):
        assert _subjects(client_a) == _on("A")
        assert _subjects(client_b) == _on("B")
    # Each account keeps its link and its watcher connection (NOTIFY over every folder
    # keeps the replica current) while the account is open.
    assert _wait(lambda: (relay_a.active_connections, relay_b.active_connections) == (2, 2))
    # bob's password is checked by B only: A never sees a b.test login.
    a_before = _settled(lambda: relay_a.bytes_up)  # alice's link leaves IDLE: "DONE"
    with imap(proxy.host, proxy.port) as client, pytest.raises(LoginError):
        client.login("bob@b.test", "alice-pw")
    assert relay_a.bytes_up == a_before
    assert "imapproxy ready" in proxy.log_text() and "b imap+plain://" in proxy.log_text()


def test_same_login_on_two_listeners_sees_two_separate_accounts(
    make_configured: ProxyMaker, relays: tuple[Relay, Relay], upstream_a: Dovecot
) -> None:
    """carol exists on both upstreams with the same password; the listener decides."""
    relay_a, relay_b = relays
    port_a, port_b = free_port(), free_port()
    proxy = make_configured(
        f"""
        [[upstream]]
        name = "a"
        url = "imap+plain://{LOOPBACK}:{relay_a.port}"
        listeners = ["{LOOPBACK}:{port_a}"]

        [[upstream]]
        name = "b"
        url = "imap+plain://{LOOPBACK}:{relay_b.port}"
        listeners = ["{LOOPBACK}:{port_b}"]
        """,
        [port_a, port_b],
    )
    carol = Account("carol", "carol-pw", {})
    with (
        imap(proxy.host, port_a, carol) as on_a,
        imap(proxy.host, port_b, carol) as on_b,
    ):
        assert _subjects(on_a) == _on("A")
        assert _subjects(on_b) == _on("B")
        # A change through one listener reaches its upstream only.
        on_a.select_folder("INBOX")
        on_a.add_flags(on_a.search(["SUBJECT", "on A #1"]), [b"$OnlyA"])
        on_b.select_folder("INBOX")
        on_b.noop()
        assert all(b"$OnlyA" not in f for f in on_b.get_flags(on_b.search("ALL")).values())
    with imap(upstream_a.host, upstream_a.port, carol) as direct:
        direct.select_folder("INBOX", readonly=True)
        assert len(direct.search(["KEYWORD", "$OnlyA"])) == 1
    # And again, from the replicas: still two accounts, never mixed.
    with imap(proxy.host, port_b, carol) as on_b, imap(proxy.host, port_a, carol) as on_a:
        assert _subjects(on_b) == _on("B")
        assert _subjects(on_a) == _on("A")


def _wait(condition: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


IDLE = 'account_idle_timeout = "1.5s"'


def test_unused_account_is_closed_and_comes_back(
    make_configured: ProxyMaker, relays: tuple[Relay, Relay]
) -> None:
    relay_a, relay_b = relays
    proxy = make_configured(_by_pattern(relays), [free_port()], IDLE)
    alice = Account("alice@a.test", "alice-pw", {})
    bob = Account("bob@b.test", "bob-pw", {})
    with imap(proxy.host, proxy.port, bob) as client_b:
        client_b.select_folder("INBOX")
        with imap(proxy.host, proxy.port, alice) as client_a:
            assert _subjects(client_a) == _on("A")
        # alice just left: her link and watcher stay until her account closes.
        assert _wait(lambda: relay_a.active_connections == 2, 1.0)
        assert _wait(lambda: relay_a.active_connections == 0), "alice's account stayed open"
        assert "closing account of 'alice@a.test'" in proxy.log_text()
        # bob still has a session: his account (and its connection) stays.
        time.sleep(2)
        assert relay_b.active_connections == 2  # link and watcher
        assert "closing account of 'bob@b.test'" not in proxy.log_text()
        client_b.noop()
    # alice comes back: a new upstream connection, her mail as before.
    with imap(proxy.host, proxy.port, alice) as client_a:
        assert _subjects(client_a) == _on("A")
        assert _wait(lambda: relay_a.active_connections == 2)  # link and watcher
    assert _wait(lambda: relay_b.active_connections == 0), "bob's account stayed open"


def _flagged_upstream(server: Dovecot, user: Account, flag: str) -> bool:
    with imap(server.host, server.port, user) as direct:
        direct.select_folder("INBOX", readonly=True)
        return bool(direct.search(["KEYWORD", flag]))


@pytest.mark.parametrize("link_up", [True, False], ids=["drained-at-close", "replayed-at-login"])
def test_closing_an_account_loses_nothing_queued(
    make_configured: ProxyMaker,
    relays: tuple[Relay, Relay],
    upstream_a: Dovecot,
    link_up: bool,
) -> None:
    """An entry still queued when the account closes is sent by the close's last drain
    (link up), or stays on disk and is sent at the next login (link down)."""
    relay_a, _ = relays
    proxy = make_configured(_by_pattern(relays), [free_port()], IDLE)
    alice = Account("alice@a.test", "alice-pw", {})
    flag = "$Closing" + ("Up" if link_up else "Down")
    with imap(proxy.host, proxy.port, alice) as client:
        assert _subjects(client) == _on("A")
        if not link_up:
            relay_a.cut()
        commit_flag_change(
            proxy.state_dir, f"imap+plain://{LOOPBACK}:{relay_a.port}", alice.user, flag
        )
    assert _wait(lambda: "closing account of 'alice@a.test'" in proxy.log_text())
    if link_up:
        assert _wait(lambda: _flagged_upstream(upstream_a, alice, flag), 10)
        assert _wait(lambda: relay_a.active_connections == 0)
        return
    time.sleep(0.5)
    assert not _flagged_upstream(upstream_a, alice, flag)
    relay_a.resume()
    with imap(proxy.host, proxy.port, alice) as client:
        client.select_folder("INBOX")
        assert _wait(lambda: _flagged_upstream(upstream_a, alice, flag), 10)


def test_idle_timeout_flag_closes_accounts_too(make_proxy: ProxyFactory, alice: Account) -> None:
    """The one-upstream command line has the same idle closing."""
    proxy = make_proxy(extra_args=["--account-idle-timeout", "1s"])
    assert proxy.relay is not None
    relay = proxy.relay
    with imap(proxy.host, proxy.port, alice) as client:
        client.select_folder("INBOX")
        time.sleep(1.5)  # a session is open: its account stays
        assert relay.active_connections == 2  # link and watcher
    assert _wait(lambda: relay.active_connections == 0)
    with imap(proxy.host, proxy.port, alice) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == len(alice.mailboxes["INBOX"])
