"""Logins of encrypted accounts: the key is made, opened, re-wrapped, or the login refused
with NO [UNAVAILABLE] and the unlock hint. Stand-in links as in test_registry; a
"restart" is a new Store and registry on the same state directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from imapproxy import registry as registry_module
from imapproxy.account import AccountRuntime
from imapproxy.login_limits import LoginPenalty
from imapproxy.registry import AccountRegistry, LoginFailed
from imapproxy.store import Store, account_keys, accounts, cache, key_wrapping, mailboxes
from imapproxy.store.cache import Kind
from imapproxy.store.keyring import AccountKey
from imapproxy.types import BlobId
from imapproxy.unlocking import CacheLocked
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.errors import UpstreamUnavailable
from tests.unit.test_registry import CHEAP, URL, Env, FakeLink, Upstream

XO = "XOAUTH2"


class Proxy(Env):
    """Env with ``encrypt`` on, and restarts."""

    def __init__(self, tmp_path: Path, upstream: Upstream, encrypt: bool = True) -> None:
        self.tmp_path = tmp_path
        super().__init__(tmp_path, upstream)
        self.start(encrypt)

    def start(self, encrypt: bool = True) -> None:
        self.registry = AccountRegistry(
            self.clock,
            self.store,
            UpstreamAddress.parse(URL),
            penalty=LoginPenalty(initial=0.0, maximum=0.0, user_maximum=0.0),
            encrypt=encrypt,
        )
        self.registry.in_thread = lambda f, *args: defer.maybeDeferred(f, *args)
        self.registry.verifier_quiet = 0.0
        self.registry.verifier_params = CHEAP

    def restart(self, encrypt: bool = True) -> None:
        for runtime in self.registry.runtimes():
            runtime.close()
        self.store.close()
        self.store = Store(self.tmp_path / "replica")
        self.upstream.links.clear()
        self.start(encrypt)

    def account(self, user: str = "alice") -> accounts.Account:
        found = self.store.read(lambda tx: accounts.find_account(tx, URL, user))
        assert found is not None
        return found

    def kinds(self) -> list[str | None]:
        account = self.account()
        return [
            key_wrapping.kind_of(w)
            for w in self.store.read(lambda tx: account_keys.wrappings(tx, account))
        ]

    def down(self) -> None:
        self.upstream.down = True
        for link in self.upstream.links:
            link.logged_in = False


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    upstream = Upstream()
    monkeypatch.setattr(FakeLink, "upstream", upstream, raising=False)
    monkeypatch.setattr(registry_module, "UpstreamLink", FakeLink)
    p = Proxy(tmp_path, upstream)
    yield p
    p.store.close()


def _mail(p: Proxy) -> None:
    account = p.account()
    p.store.write(lambda tx: mailboxes.create(tx, account.id, "Zebra"))
    p.store.write(lambda tx: cache.put(tx, account.id, BlobId(1), Kind.HEADER, b"Subject: z"))


def _has_mail(p: Proxy) -> bool:
    account = p.account()
    return p.store.read(lambda tx: mailboxes.find(tx, account.id, "Zebra")) is not None


def test_a_first_login_encrypts_and_a_restart_locks_until_the_password_opens(
    proxy: Proxy,
) -> None:
    assert isinstance(proxy.login(b"right"), AccountRuntime)
    assert proxy.kinds() == ["password"]
    _mail(proxy)
    proxy.restart()
    assert proxy.store.keyring.is_locked(proxy.account().id)
    with pytest.raises(Exception, match="not unlocked"):
        _has_mail(proxy)
    assert isinstance(proxy.login(b"wrong"), LoginFailed)
    assert proxy.store.keyring.is_locked(proxy.account().id)
    assert isinstance(proxy.login(b"right"), AccountRuntime)
    assert _has_mail(proxy)


def test_offline_after_a_restart_the_right_password_opens_the_wrong_one_does_not(
    proxy: Proxy,
) -> None:
    proxy.login(b"right")
    _mail(proxy)
    proxy.restart()
    proxy.down()
    assert isinstance(proxy.login(b"wrong"), LoginFailed)
    assert proxy.store.keyring.is_locked(proxy.account().id)
    assert isinstance(proxy.login(b"right"), AccountRuntime)
    assert _has_mail(proxy)


def test_a_password_changed_elsewhere_after_a_restart_needs_an_unlock(proxy: Proxy) -> None:
    proxy.login(b"right")
    _mail(proxy)
    proxy.restart()
    proxy.upstream.password = b"new"
    refused = proxy.login(b"new")
    assert isinstance(refused, CacheLocked) and isinstance(refused, UpstreamUnavailable)
    assert "imapproxy unlock alice" in str(refused)
    assert proxy.registry.runtimes() == []
    # The unlock: the old password, refused upstream, opens the key here.
    unlocked = proxy.login(b"right")
    assert isinstance(unlocked, AccountRuntime)
    assert unlocked.link.password == b""  # never sent upstream again
    assert _has_mail(proxy)
    # The new password now works and takes the old one's place.
    assert proxy.login(b"new") is unlocked
    account = proxy.account()
    [wrapping] = proxy.store.read(lambda tx: account_keys.wrappings(tx, account))
    now = proxy.registry.now()
    assert key_wrapping.unwrap(wrapping, b"alice", account.id, b"new", now) is not None
    assert key_wrapping.unwrap(wrapping, b"alice", account.id, b"right", now) is None
    proxy.restart()
    assert isinstance(proxy.login(b"new"), AccountRuntime)
    assert _has_mail(proxy)


def test_a_wrong_password_does_not_unlock_even_when_the_upstream_is_refusing(
    proxy: Proxy,
) -> None:
    proxy.login(b"right")
    proxy.restart()
    proxy.upstream.password = b"new"
    assert isinstance(proxy.login(b"guess"), LoginFailed)
    assert proxy.store.keyring.is_locked(proxy.account().id)


def test_a_local_password_unlocks_online_without_going_upstream(proxy: Proxy) -> None:
    from imapproxy import passwd_command

    proxy.login(b"right")
    _mail(proxy)
    proxy.store.close()
    passwd_command.set_password(proxy.tmp_path, URL, "alice", b"local-secret", CHEAP)
    proxy.store = Store(proxy.tmp_path / "replica")
    proxy.start()
    proxy.down()
    assert isinstance(proxy.login(b"right"), AccountRuntime)  # takes the pending password
    assert sorted(proxy.kinds()) == ["local", "password"]
    proxy.restart()
    proxy.upstream.password = b"new"
    links = len(proxy.upstream.links)
    runtime = proxy.login(b"local-secret")
    assert isinstance(runtime, AccountRuntime)
    assert len(proxy.upstream.links) == links  # no upstream attempt with it
    assert _has_mail(proxy)


def test_oauth_a_fresh_token_after_a_restart_is_refused_until_unlocked(proxy: Proxy) -> None:
    from imapproxy import passwd_command

    proxy.upstream.tokens = {b"alice": {b"tok-1"}}
    assert isinstance(proxy.login(b"tok-1", mechanism=XO), AccountRuntime)
    assert proxy.kinds() == ["token"]
    _mail(proxy)
    proxy.store.close()
    passwd_command.set_password(proxy.tmp_path, URL, "alice", b"local-secret", CHEAP)
    proxy.store = Store(proxy.tmp_path / "replica")
    proxy.start()
    proxy.login(b"tok-1", mechanism=XO)  # with the key in memory: takes the pending one
    assert sorted(proxy.kinds()) == ["local", "token"]
    proxy.restart()
    # The same token (its wrapping still lives) opens it.
    assert isinstance(proxy.login(b"tok-1", mechanism=XO), AccountRuntime)
    proxy.restart()
    proxy.upstream.tokens = {b"alice": {b"tok-2"}}
    refused = proxy.login(b"tok-2", mechanism=XO)
    assert isinstance(refused, CacheLocked)
    assert isinstance(proxy.login(b"local-secret"), AccountRuntime)
    assert isinstance(proxy.login(b"tok-2", mechanism=XO), AccountRuntime)
    assert proxy.kinds().count("token") == 2
    assert _has_mail(proxy)


def test_an_existing_clear_account_is_encrypted_at_its_first_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = Upstream()
    monkeypatch.setattr(FakeLink, "upstream", upstream, raising=False)
    monkeypatch.setattr(registry_module, "UpstreamLink", FakeLink)
    p = Proxy(tmp_path, upstream, encrypt=False)
    try:
        p.login(b"right")
        _mail(p)
        assert p.kinds() == []
        p.restart(encrypt=True)
        assert isinstance(p.login(b"right"), AccountRuntime)
        assert p.kinds() == ["password"]
        assert _has_mail(p)
        p.restart(encrypt=False)  # turned off again: the account stays encrypted
        assert p.store.keyring.is_locked(p.account().id)
        assert isinstance(p.login(b"right"), AccountRuntime)
        assert p.kinds() == ["password"] and _has_mail(p)
    finally:
        p.store.close()


def test_any_exception_while_opening_the_key_refuses(proxy: Proxy) -> None:
    proxy.login(b"right")
    proxy.restart()

    def broken(f: Any, *args: Any) -> Any:
        if f is key_wrapping.unwrap:
            return defer.fail(RuntimeError("boom"))
        return defer.maybeDeferred(f, *args)

    proxy.registry.in_thread = broken
    outcome = proxy.login(b"right")
    assert not isinstance(outcome, AccountRuntime)
    assert proxy.store.keyring.is_locked(proxy.account().id)
    proxy.down()
    assert not isinstance(proxy.login(b"right"), AccountRuntime)


def test_an_edited_wrapping_refuses_the_right_password(proxy: Proxy) -> None:
    proxy.login(b"right")
    proxy.restart()
    account = proxy.account()
    [w] = proxy.store.read(lambda tx: account_keys.wrappings(tx, account))
    bad = {**w, "nonce": "00" * 12}
    proxy.store.write(lambda tx: account_keys.set_wrappings(tx, account, [bad]))
    assert isinstance(proxy.login(b"right"), CacheLocked)
    proxy.down()
    assert isinstance(proxy.login(b"right"), CacheLocked)
    assert proxy.registry.runtimes() == []


def test_a_token_never_kept_still_encrypts_and_a_local_password_opens_it(
    proxy: Proxy,
) -> None:
    from imapproxy import passwd_command

    proxy.registry.token_lifetime = 0  # offline_token_lifetime = 0: no token is kept
    proxy.upstream.tokens = {b"alice": {b"tok-1"}}
    assert isinstance(proxy.login(b"tok-1", mechanism=XO), AccountRuntime)
    assert proxy.store.keyring.is_encrypted(proxy.account().id)
    assert proxy.kinds() == []
    _mail(proxy)
    # `imapproxy passwd` beside the running proxy (with the key in its memory).
    passwd_command.set_in_store(proxy.store, URL, "alice", b"local-secret", CHEAP)
    proxy.login(b"tok-1", mechanism=XO)  # a login that reuses the runtime takes it
    assert proxy.kinds() == ["local"]
    proxy.restart()
    assert isinstance(proxy.login(b"tok-1", mechanism=XO), CacheLocked)
    assert isinstance(proxy.login(b"local-secret"), AccountRuntime)
    assert _has_mail(proxy)


def test_a_wrapping_around_a_key_of_someone_elses_choosing_never_opens(
    proxy: Proxy,
) -> None:
    """Whoever can write the state directory can add a wrapping of a key they chose
    under a password they know; logging in with it first must not make it the key."""
    proxy.login(b"right")
    _mail(proxy)
    proxy.restart()
    account = proxy.account()
    forged = key_wrapping.wrap(
        AccountKey.new().data_key, "local", b"alice", account.id, b"intruder", params=CHEAP
    )
    real = proxy.store.read(lambda tx: account_keys.wrappings(tx, account))
    proxy.store.write(lambda tx: account_keys.set_wrappings(tx, account, [*real, forged]))
    assert not isinstance(proxy.login(b"intruder"), AccountRuntime)
    assert proxy.store.keyring.is_locked(account.id)
    assert isinstance(proxy.login(b"right"), AccountRuntime)
    assert _has_mail(proxy)
