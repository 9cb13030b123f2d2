"""`imapproxy unlock USER`: give a running proxy the key of an encrypted account back.

After a restart an encrypted account's key is locked until a secret opens it. When the
password was changed elsewhere meanwhile (or an OAuth client brings a fresh token),
the upstream accepts the login but nothing opens the key, and the proxy answers
NO [UNAVAILABLE] with the hint to run this. It asks for the old password or the local
password (``imapproxy passwd``), without echo, and logs in with it to the proxy's own
listener (LOGIN, then LOGOUT): for a locked account the proxy accepts a password that
opens the key through one of its wrappings, online too, without sending it upstream.
The key then stays in the proxy's memory, and the next login with the new password
or token adds its own wrapping.

The password comes from the terminal (no echo), the first line of stdin when that is
not a terminal, or ``--password-fd N`` (scripts); never from the command line.
"""

from __future__ import annotations

import getpass
import imaplib
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imapproxy.config import DEFAULT_LISTEN, Config, ConfigError, parse_listen

TIMEOUT = 60.0


class UnlockError(Exception):
    """The one line the user sees; the account stays locked."""


@dataclass(frozen=True)
class Target:
    """Where to log in: a listener of the proxy and how to reach it privately."""

    host: str
    port: int
    #: "plain" (loopback), "starttls" or "implicit".
    tls: str = "plain"
    #: What to trust for the proxy's certificate (its own, usually self-signed).
    ca_file: Path | None = None


def read_password(
    user: str,
    fd: int | None = None,
    stdin: IO[str] | None = None,
    prompt: object = getpass.getpass,
) -> bytes:
    if fd is not None:
        with os.fdopen(fd, "r", encoding="utf-8", closefd=False) as source:
            password = source.readline().rstrip("\r\n")
    else:
        stdin = stdin or sys.stdin
        if stdin.isatty():
            password = prompt(f"Old password or local password of {user}: ")  # type: ignore[operator]
        else:
            password = stdin.readline().rstrip("\r\n")
    if not password:
        raise UnlockError("no password given")
    return str(password).encode()


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def target_of(config: Config) -> Target:
    """The first listener this machine can reach: a plain one (STARTTLS when the proxy
    requires it there), else one with implicit TLS."""
    usable = [lst for lst in config.listeners if lst.endpoint is None]
    for listener in usable:
        if not listener.implicit_tls:
            tls = "starttls" if config.requires_tls_for_login(listener) else "plain"
            return Target(_connect_host(listener.host), listener.port, tls, config.tls_cert)
    for listener in usable:
        return Target(_connect_host(listener.host), listener.port, "implicit", config.tls_cert)
    raise UnlockError("no listener with a known address in the configuration: give --listen")


def target_of_listen(listen: str | None, tls: bool, ca_file: Path | None) -> Target:
    try:
        host, port = parse_listen(listen or DEFAULT_LISTEN)
    except ConfigError as exc:
        raise UnlockError(str(exc)) from None
    return Target(_connect_host(host), port, "implicit" if tls else "plain", ca_file)


def _context(target: Target) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(target.ca_file) if target.ca_file is not None else None
    )
    return context


def unlock(target: Target, user: str, password: bytes, timeout: float = TIMEOUT) -> None:
    """Log in with password and out again; UnlockError unless the proxy said OK."""
    try:
        if target.tls == "implicit":
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                target.host, target.port, ssl_context=_context(target), timeout=timeout
            )
        else:
            conn = imaplib.IMAP4(target.host, target.port, timeout=timeout)
            if target.tls == "starttls":
                conn.starttls(_context(target))
    except (OSError, imaplib.IMAP4.error) as exc:
        raise UnlockError(
            f"cannot reach the proxy at {target.host}:{target.port}: {exc} (is it running?)"
        ) from None
    try:
        try:
            if password.isascii() and user.isascii():
                conn.login(user, password.decode())
            else:
                plain = b"\0" + user.encode() + b"\0" + password
                conn.authenticate("PLAIN", lambda _challenge: plain)
        except imaplib.IMAP4.error as exc:
            raise UnlockError(_refusal(user, exc)) from None
        except OSError as exc:
            raise UnlockError(f"the connection to the proxy broke: {exc}") from None
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    finally:
        try:
            conn.shutdown()
        except OSError:
            pass


def _refusal(user: str, error: Exception) -> str:
    text = error.args[0] if error.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if "[UNAVAILABLE]" in str(text):
        return f"not unlocked: {text}"
    return (
        f"refused: this password opens neither the local password's nor an older "
        f"password's key of {user}, or the account is not locked (then log in as usual)"
    )
