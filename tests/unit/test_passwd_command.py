"""`imapproxy passwd`: the password is read safely, only a verifier is stored, and
every mistake ends in a clear refusal that changes nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from imapproxy import cli
from imapproxy.config import Config, UpstreamConfig
from imapproxy.passwd_command import PasswdError, read_new_password, set_password, upstream_for
from imapproxy.store import Store, accounts, offline_logins
from imapproxy.store.verifier import ScryptParams
from imapproxy.upstream.address import UpstreamAddress

CHEAP = ScryptParams(2**10, 8, 1)
URL = "imaps://imap.example.org:993"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def prompts(*answers: str) -> Any:
    queue = list(answers)
    return lambda text: queue.pop(0)


def test_from_stdin_one_line() -> None:
    assert read_new_password("a", True, io.StringIO("long enough pw\nrest\n")) == b"long enough pw"


def test_at_the_terminal_typed_twice() -> None:
    assert read_new_password("a", False, Tty(), prompts("s3cret-pw", "s3cret-pw")) == b"s3cret-pw"
    with pytest.raises(PasswdError, match="differ"):
        read_new_password("a", False, Tty(), prompts("s3cret-pw", "s3cret-pX"))


def test_no_terminal_without_stdin_flag_is_refused() -> None:
    with pytest.raises(PasswdError, match="--stdin"):
        read_new_password("a", False, io.StringIO("pw-from-a-pipe\n"))


@pytest.mark.parametrize("text", ["", "\n", "short\n"])
def test_short_or_empty_is_refused(text: str) -> None:
    with pytest.raises(PasswdError, match="at least"):
        read_new_password("a", True, io.StringIO(text))


def _state(tmp_path: Path, user: str | None = "alice") -> Path:
    store = Store(tmp_path / "replica")
    if user is not None:
        store.write(lambda tx: accounts.ensure_account(tx, URL, user))
    store.close()
    return tmp_path


def _local(state: Path, user: str = "alice") -> object:
    store = Store(state / "replica")
    try:
        account = store.read(lambda tx: accounts.find_account(tx, URL, user))
        assert account is not None
        return store.read(lambda tx: offline_logins.get_local_password(tx, account))
    finally:
        store.close()


def test_sets_a_verifier_only_and_removes_it(tmp_path: Path) -> None:
    state = _state(tmp_path)
    set_password(state, URL, "alice", b"local-password", CHEAP)
    record = _local(state)
    assert offline_logins.local_password_matches(record, b"alice", b"local-password")
    assert b"local-password" not in (state / "replica" / "data.mdb").read_bytes()
    set_password(state, URL, "alice", None)
    assert _local(state) is None


def test_an_account_never_seen_or_no_replica_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PasswdError, match="no replica"):
        set_password(tmp_path / "nothing", URL, "alice", b"local-password", CHEAP)
    state = _state(tmp_path)
    with pytest.raises(PasswdError, match="never logged in"):
        set_password(state, URL, "bob", b"local-password", CHEAP)
    with pytest.raises(PasswdError, match="never logged in"):
        set_password(state, "imaps://other.example.org:993", "alice", b"local-password", CHEAP)


def _config(*upstreams: UpstreamConfig) -> Config:
    return Config((), Path("/nonexistent"), upstreams)


def _upstream(name: str, **kw: Any) -> UpstreamConfig:
    return UpstreamConfig(name, UpstreamAddress.parse(f"imaps://{name}.example"), **kw)


def test_the_upstream_is_picked_by_login_pattern() -> None:
    config = _config(_upstream("work", logins=("*@work.example",)), _upstream("rest"))
    assert upstream_for(config, "Me@Work.Example") == "imaps://work.example:993"
    assert upstream_for(config, "me@home.example") == "imaps://rest.example:993"
    with pytest.raises(PasswdError, match="no upstream"):
        upstream_for(_config(_upstream("work", logins=("*@work.example",))), "me@x")
    by_listener = _config(
        _upstream("a", listeners=("127.0.0.1:1143",)), _upstream("b", listeners=("127.0.0.1:2143",))
    )
    with pytest.raises(PasswdError, match="--upstream"):
        upstream_for(by_listener, "me")


def test_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("local-password\n"))
    argv = ["passwd", "alice", "--upstream", URL, "--state-dir", str(state), "--stdin"]
    assert cli.main(argv) == 0
    assert "set" in capsys.readouterr().out
    assert offline_logins.local_password_matches(_local(state), b"alice", b"local-password")
    assert cli.main(["passwd", "alice", "--state-dir", str(state), "--stdin"]) == 2
    assert "--upstream" in capsys.readouterr().err
    assert cli.main(["passwd", "alice", "--upstream", "ftp://x", "--stdin"]) == 2
