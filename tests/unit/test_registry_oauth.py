"""Token logins in the registry: the upstream decides online; offline, only a token it
accepted for this user before, not yet expired, or the local password; every record
made wrong on purpose refuses. Stand-in links as in test_registry."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from imapproxy import registry as registry_module
from imapproxy.account import AccountRuntime
from imapproxy.config import UpstreamConfig
from imapproxy.registry import LoginFailed
from imapproxy.router import LoginRouter, Route
from imapproxy.store import accounts, offline_logins, verifier
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.errors import UpstreamUnavailable
from tests.unit.test_registry import CHEAP, URL, Env, env  # noqa: F401

XO = "XOAUTH2"
OB = "OAUTHBEARER"


def down(env: Env) -> None:  # noqa: F811
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False


def tokens(env: Env, user: str = "alice") -> Any:  # noqa: F811
    account = env.store.read(lambda tx: accounts.find_account(tx, URL, user))
    assert account is not None
    return env.store.read(lambda tx: offline_logins.get_tokens(tx, account))


def set_local_password(env: Env, password: bytes, user: str = "alice") -> None:  # noqa: F811
    account = env.store.write(lambda tx: accounts.ensure_account(tx, URL, user))
    record = offline_logins.make_local_password(user.encode(), password, CHEAP)
    env.store.write(lambda tx: offline_logins.set_local_password(tx, account, record))


@pytest.fixture(autouse=True)
def cheap(env: Env) -> None:  # noqa: F811
    env.registry.verifier_params = CHEAP
    env.registry.now = lambda: 1_800_000_000.0
    env.upstream.tokens = {b"alice": {b"tok-a1", b"tok-a2"}, b"bob": {b"tok-b"}}


def test_online_the_upstream_decides_and_only_a_token_verifier_is_kept(env: Env) -> None:  # noqa: F811
    assert isinstance(env.login(b"tok-b", mechanism=XO), LoginFailed)  # bob's token
    runtime = env.login(b"tok-a1", mechanism=XO)
    assert isinstance(runtime, AccountRuntime)
    assert runtime.link.mechanism == XO
    assert env.stored() is None  # no password verifier from a token login
    stored = tokens(env)
    assert len(stored) == 1 and b"tok-a1" not in json.dumps(stored).encode()
    assert stored[0]["expires"] == 1_800_000_000 + 86400  # the default lifetime


def test_the_upstreams_json_error_reaches_the_client(env: Env) -> None:  # noqa: F811
    env.upstream.error_json = b'{"status":"invalid_token"}'
    refused = env.login(b"nope", mechanism=OB)
    assert isinstance(refused, LoginFailed) and refused.error_json == b'{"status":"invalid_token"}'


def test_offline_a_token_accepted_before_logs_in_for_its_user_only(env: Env) -> None:  # noqa: F811
    runtime = env.login(b"tok-a1", mechanism=XO)
    env.login(b"tok-b", user=b"bob", mechanism=XO)
    down(env)
    assert env.login(b"tok-a1", mechanism=XO) is runtime
    assert env.login(b"tok-a1", mechanism=OB) is runtime  # the same token, either mechanism
    assert isinstance(env.login(b"tok-a2", mechanism=XO), LoginFailed)  # never seen here
    assert isinstance(env.login(b"tok-b", mechanism=XO), LoginFailed)  # bob's token
    assert isinstance(env.login(b"tok-a1", user=b"bob", mechanism=XO), LoginFailed)
    assert isinstance(env.login(b"tok-a1"), LoginFailed)  # a token is not a password


def test_offline_an_expired_token_verifier_refuses(env: Env) -> None:  # noqa: F811
    env.registry.token_lifetime = 600
    env.login(b"tok-a1", mechanism=XO)
    down(env)
    env.registry.now = lambda: 1_800_000_000.0 + 599
    assert isinstance(env.login(b"tok-a1", mechanism=XO), AccountRuntime)
    env.registry.now = lambda: 1_800_000_000.0 + 600
    assert isinstance(env.login(b"tok-a1", mechanism=XO), LoginFailed)


def _jwt(exp: int) -> bytes:
    def part(value: bytes) -> bytes:
        return base64.urlsafe_b64encode(value).rstrip(b"=")

    return part(b'{"alg":"RS256"}') + b"." + part(json.dumps({"exp": exp}).encode()) + b".c2ln"


def test_a_jwt_is_kept_no_longer_than_its_own_exp(env: Env) -> None:  # noqa: F811
    token = _jwt(1_800_000_000 + 300)
    env.upstream.tokens[b"alice"].add(token)
    env.login(token, mechanism=OB)
    assert tokens(env)[0]["expires"] == 1_800_000_000 + 300


def test_a_token_already_expired_by_its_exp_is_not_kept(env: Env) -> None:  # noqa: F811
    token = _jwt(1_800_000_000 - 5)
    env.upstream.tokens[b"alice"].add(token)
    assert isinstance(env.login(token, mechanism=XO), AccountRuntime)
    assert tokens(env) is None


def test_offline_a_tampered_token_record_refuses(
    env: Env,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    env.login(b"tok-a1", mechanism=XO)
    down(env)
    account = env.store.read(lambda tx: accounts.find_account(tx, URL, "alice"))
    assert account is not None
    stored = tokens(env)
    later = [{**stored[0], "expires": stored[0]["expires"] + 86400}]
    env.store.write(lambda tx: offline_logins.set_tokens(tx, account, later))
    assert isinstance(env.login(b"tok-a1", mechanism=XO), LoginFailed)
    broken = [{**stored[0], "scrypt": [2**40, 8, 1]}]
    env.store.write(lambda tx: offline_logins.set_tokens(tx, account, broken))
    assert isinstance(env.login(b"tok-a1", mechanism=XO), LoginFailed)
    assert "verifiers unusable" in caplog.text


@pytest.mark.parametrize("error", [KeyError("x"), MemoryError(), RuntimeError("r")])
def test_any_exception_while_checking_a_token_offline_is_no_session(
    env: Env,  # noqa: F811
    error: BaseException,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env.login(b"tok-a1", mechanism=XO)
    down(env)

    def broken(*args: object) -> bool:
        raise error

    monkeypatch.setattr(offline_logins, "token_matches", broken)
    assert env.login(b"tok-a1", mechanism=XO) is error


def test_a_token_check_answering_anything_but_true_refuses(
    env: Env,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env.login(b"tok-a1", mechanism=XO)
    down(env)
    monkeypatch.setattr(offline_logins, "token_matches", lambda *args: 1)
    assert isinstance(env.login(b"tok-a1", mechanism=XO), LoginFailed)


def test_offline_the_local_password_logs_in_a_token_account(env: Env) -> None:  # noqa: F811
    runtime = env.login(b"tok-a1", mechanism=XO)
    set_local_password(env, b"local-pw")
    down(env)
    assert env.login(b"local-pw") is runtime
    assert isinstance(env.login(b"wrong-pw"), LoginFailed)
    assert isinstance(env.login(b"local-pw", user=b"bob"), (LoginFailed, UpstreamUnavailable))


def test_the_local_password_does_not_log_in_online(env: Env) -> None:  # noqa: F811
    env.login(b"tok-a1", mechanism=XO)
    set_local_password(env, b"local-pw")
    assert isinstance(env.login(b"local-pw"), LoginFailed)  # the upstream decides


def test_offline_the_upstream_password_or_the_local_one(env: Env) -> None:  # noqa: F811
    env.login(b"right")
    set_local_password(env, b"local-pw")
    down(env)
    assert isinstance(env.login(b"right"), AccountRuntime)
    assert isinstance(env.login(b"local-pw"), AccountRuntime)
    assert isinstance(env.login(b"neither"), LoginFailed)


def test_a_tampered_local_password_record_refuses_even_the_upstream_password(
    env: Env,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    env.login(b"right")
    down(env)
    account = env.store.read(lambda tx: accounts.find_account(tx, URL, "alice"))
    assert account is not None
    bad = {"scrypt": [3, 8, 1], "salt": "00" * 16, "hash": "00" * 32}
    env.store.write(lambda tx: offline_logins.set_local_password(tx, account, bad))
    assert isinstance(env.login(b"right"), LoginFailed)
    assert "local password unusable" in caplog.text


def test_a_token_account_without_local_password_refuses_passwords_offline(
    env: Env,  # noqa: F811
) -> None:
    env.login(b"tok-a1", mechanism=XO)
    down(env)
    assert isinstance(env.login(b"tok-a1"), LoginFailed)
    assert verifier.problem(env.stored()) is not None  # nothing stored for passwords


def _route(env: Env, name: str, offered: frozenset[str] | None, **kw: Any) -> Route:  # noqa: F811
    from imapproxy.registry import AccountRegistry

    registry = AccountRegistry(
        env.clock, env.store, UpstreamAddress.parse(f"imap+plain://{name}:1")
    )
    registry.offered_mechanisms = offered
    return Route(UpstreamConfig(name, registry.address, **kw), registry)


def test_before_login_a_listener_advertises_what_every_upstream_it_reaches_offers(
    env: Env,  # noqa: F811
) -> None:
    both = frozenset({XO, OB})
    routes = [
        _route(env, "gmail", both, logins=("*@gmail.com",)),
        _route(env, "work", frozenset({XO}), logins=("*@work.example",)),
        _route(env, "other", None, listeners=("127.0.0.1:2143",)),
    ]
    router = LoginRouter(env.clock, routes)

    class L:  # a listener as the router sees it
        def __init__(self, text: str) -> None:
            self.text = text

        def describe(self) -> str:
            return self.text

    assert router.for_listener(L("127.0.0.1:1143")).advertised_mechanisms() == {XO}  # type: ignore[arg-type]
    # The third upstream (mechanisms unknown) is reachable on 2143: nothing is advertised.
    assert router.for_listener(L("127.0.0.1:2143")).advertised_mechanisms() == set()  # type: ignore[arg-type]
    routes[2].registry.offered_mechanisms = both
    assert router.for_listener(L("127.0.0.1:2143")).advertised_mechanisms() == {XO}  # type: ignore[arg-type]


def test_what_the_upstream_offered_is_remembered_across_restarts(env: Env) -> None:  # noqa: F811
    from imapproxy.registry import AccountRegistry

    env.registry.note_mechanisms(frozenset({OB}))
    again = AccountRegistry(env.clock, env.store, UpstreamAddress.parse(URL))
    assert again.advertised_mechanisms() == {OB}


def test_a_local_password_login_never_sends_it_upstream_and_a_later_login_does(
    env: Env,  # noqa: F811
) -> None:
    """Opened offline by its local password (after a restart: no runtime yet), the
    account's link has no credentials to send; the next login goes to the upstream and
    brings a real link."""
    set_local_password(env, b"local-pw")
    down(env)
    runtime = env.login(b"local-pw")
    assert isinstance(runtime, AccountRuntime)
    assert isinstance(runtime.link, registry_module._OfflineOnlyLink)
    assert runtime.link.password == b"" and not runtime.link.known_down
    env.upstream.down = False
    assert env.login(b"tok-a1", mechanism=XO) is runtime
    assert runtime.link.password == b"tok-a1" and runtime.link.mechanism == XO
