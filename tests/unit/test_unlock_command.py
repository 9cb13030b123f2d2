"""`imapproxy unlock`: where it logs in, how it reads the password, what it says."""

from __future__ import annotations

import imaplib
import io
import os
from pathlib import Path

import pytest

from imapproxy import unlock_command
from imapproxy.config import Config, Listener
from imapproxy.unlock_command import Target, UnlockError
from tests.support.net import free_port


class _NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_the_password_comes_from_stdin_or_a_descriptor_never_argv() -> None:
    assert unlock_command.read_password("u", stdin=_NotATerminal("secret\nmore\n")) == b"secret"
    read, write = os.pipe()
    os.write(write, "päss word\n".encode())
    os.close(write)
    try:
        assert unlock_command.read_password("u", fd=read) == "päss word".encode()
    finally:
        os.close(read)
    with pytest.raises(UnlockError):
        unlock_command.read_password("u", stdin=_NotATerminal("\n"))


def test_the_target_is_a_listener_of_the_configuration(tmp_path: Path) -> None:
    config = Config.build("imaps://imap.example.org", "127.0.0.1:1200", tmp_path)
    assert unlock_command.target_of(config) == Target("127.0.0.1", 1200, "plain", None)
    any_address = Config.build(
        "imaps://imap.example.org", "0.0.0.0:1201", tmp_path, allow_plaintext_listen=True
    )
    assert unlock_command.target_of(any_address).host == "127.0.0.1"
    systemd = Config((Listener("", 0, endpoint="systemd:domain=INET:index=0"),), tmp_path, ())
    with pytest.raises(UnlockError, match="--listen"):
        unlock_command.target_of(systemd)
    assert unlock_command.target_of_listen("127.0.0.1:993", True, None).tls == "implicit"
    with pytest.raises(UnlockError):
        unlock_command.target_of_listen("nowhere", False, None)


def test_no_proxy_listening_is_one_line() -> None:
    with pytest.raises(UnlockError, match="is it running"):
        unlock_command.unlock(Target("127.0.0.1", free_port()), "u", b"pw", timeout=5)


def test_refusals_say_what_happened() -> None:
    locked = imaplib.IMAP4.error("[UNAVAILABLE] the login was accepted but ...")
    assert unlock_command._refusal("u", locked).startswith("not unlocked: [UNAVAILABLE]")
    wrong = imaplib.IMAP4.error(b"[AUTHENTICATIONFAILED] Authentication failed")
    assert "refused" in unlock_command._refusal("u", wrong)
