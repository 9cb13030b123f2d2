"""Fixtures for integration tests: a real Dovecot, seeded accounts, and the proxy under test.

Dovecot is started once per session (it takes well under a second, but seeding and
indexing add up); tests that change mail use ``fresh_user`` so they never disturb the
shared ``alice``/``bob`` accounts other tests read.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests.support.corpus import Account, seed_standard_account, standard_mailboxes
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

HERE = Path(__file__).resolve().parent
STANDARD_USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration, so ``-m 'not integration'`` skips them all."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with ``alice`` and ``bob`` seeded with the standard account."""
    with Dovecot(users=STANDARD_USERS) as server:
        for user in STANDARD_USERS:
            seed_standard_account(server, user)
        yield server


@pytest.fixture(scope="session")
def dovecot_without_notify() -> Iterator[Dovecot]:
    """A Dovecot that does not announce NOTIFY (RFC 5465): the watcher polls STATUS."""
    with Dovecot(without_capabilities=("NOTIFY",)) as server:
        yield server


@pytest.fixture(scope="session")
def alice(dovecot: Dovecot) -> Account:
    """The shared, read-only ``alice`` account and what was seeded into it."""
    return _account(dovecot, "alice")


@pytest.fixture(scope="session")
def bob(dovecot: Dovecot) -> Account:
    """The shared, read-only ``bob`` account and what was seeded into it."""
    return _account(dovecot, "bob")


def _account(dovecot: Dovecot, user: str) -> Account:
    # Generation is deterministic, so re-deriving the seeded content is exact and cheap.
    return Account(user, dovecot.users[user], standard_mailboxes())


@pytest.fixture
def fresh_user(dovecot: Dovecot) -> Account:
    """A new user with a unique name and the standard account, free for a test to mutate."""
    user = f"user-{uuid.uuid4().hex[:10]}"
    password = f"{user}-pw"
    dovecot.add_user(user, password)
    return Account(user, password, seed_standard_account(dovecot, user))


class ProxyFactory(Protocol):
    """Signature of the ``make_proxy`` fixture."""

    def __call__(
        self,
        use_relay: bool = True,
        *,
        tls: bool = False,
        state_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> ProxyProcess: ...


@pytest.fixture
def make_proxy(dovecot: Dovecot, tmp_path: Path) -> Iterator[ProxyFactory]:
    """Factory for started proxies pointed at Dovecot, stopped (and relays closed) at teardown.

    With ``use_relay`` (the default) the upstream link goes through a ``Relay`` available
    as ``proxy.relay``, so a test can count upstream bytes or cut the link. ``tls=True``
    uses Dovecot's implicit-TLS port with ``--upstream-ca``. Reuse ``state_dir`` across
    two proxies to test what survives a restart.
    """
    counter = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def factory(
            use_relay: bool = True,
            *,
            tls: bool = False,
            state_dir: Path | None = None,
            extra_args: Sequence[str] = (),
        ) -> ProxyProcess:
            port = dovecot.tls_port if tls else dovecot.port
            relay = None
            if use_relay:
                relay = stack.enter_context(Relay(dovecot.host, port))
                port = relay.port
            scheme = "imaps" if tls else "imap+plain"
            proxy = ProxyProcess(
                f"{scheme}://{dovecot.host}:{port}",
                state_dir or tmp_path / f"proxy-state-{next(counter)}",
                upstream_ca=dovecot.ca_file if tls else None,
                extra_args=extra_args,
            )
            proxy.relay = relay
            stack.callback(proxy.stop)
            return proxy.start()

        yield factory


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> ProxyProcess:
    """One started proxy for alice/bob/fresh users, with its upstream through a relay."""
    return make_proxy()
