"""`imapproxy passwd`: a local password for logging in offline.

An account that logs in with OAuth2 has no password the proxy could check while the
upstream is out of reach, and a token seen before works offline only until it
expires (``offline_logins``). A local password fills the gap: set here, kept only as a
salted scrypt verifier in the account's record in the state directory, checked only
when the upstream cannot be reached (online, the upstream decides every login).

For an encrypted account (``encrypt = true``) the local password also unlocks the
replica: this command has no account key, so it leaves the password's key sealed to
the account's public key (store/key_drop.py) and the proxy turns it into a wrapping
of the key the next time the account logs in (or is unlocked) with the key in
memory. Until then the old local password (if any) keeps unlocking it; ``--remove``
removes both the verifier and the local wrapping.

The password is read from the terminal twice (the two must match), or with
``--stdin`` from the first line of standard input; never from the command line. The
account must have logged in through the proxy once: offline there would be nothing to
serve before that.
"""

from __future__ import annotations

import fnmatch
import getpass
import sys
from pathlib import Path
from typing import IO

from imapproxy.config import Config
from imapproxy.store import (
    Store,
    Tx,
    account_keys,
    accounts,
    key_drop,
    key_wrapping,
    offline_logins,
    verifier,
)

#: Shorter local passwords are refused (a stolen state directory allows offline guessing).
MIN_LENGTH = 8


class PasswdError(Exception):
    """Something the user can fix; the message is the one line they see."""


def read_new_password(
    user: str, use_stdin: bool, stdin: IO[str] | None = None, prompt: object = getpass.getpass
) -> bytes:
    """From stdin's first line, or typed twice at the terminal."""
    stdin = stdin or sys.stdin
    if use_stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        if not stdin.isatty():
            raise PasswdError("no terminal to type the password on: use --stdin to pipe it")
        password = prompt(f"New local password for {user}: ")  # type: ignore[operator]
        again = prompt("Again: ")  # type: ignore[operator]
        if password != again:
            raise PasswdError("the two passwords differ; nothing changed")
    if len(password) < MIN_LENGTH:
        raise PasswdError(f"a local password needs at least {MIN_LENGTH} characters")
    return str(password).encode()


def upstream_for(config: Config, user: str) -> str:
    """The URL of the upstream a login of ``user`` goes to (by login pattern; listener
    routing cannot be told apart here, so it must not matter)."""
    matching = [
        u
        for u in config.upstreams
        if not u.logins or any(fnmatch.fnmatchcase(user.casefold(), p.casefold()) for p in u.logins)
    ]
    if not matching:
        raise PasswdError(f"no upstream of the configuration takes the login {user!r}")
    if len(matching) > 1 and any(u.listeners for u in matching):
        raise PasswdError(
            "several upstreams may take this login (by listener): say which with --upstream"
        )
    return matching[0].address.url()


def set_password(
    state_dir: Path,
    upstream: str,
    user: str,
    password: bytes | None,
    params: verifier.ScryptParams = verifier.CURRENT,
) -> None:
    """Store the local password's verifier (None removes it)."""
    replica = state_dir / "replica"
    if not replica.is_dir():
        raise PasswdError(f"no replica in {state_dir}: log in through the proxy once first")
    store = Store(replica)
    try:
        set_in_store(store, upstream, user, password, params)
    finally:
        store.close()


def set_in_store(
    store: Store,
    upstream: str,
    user: str,
    password: bytes | None,
    params: verifier.ScryptParams = verifier.CURRENT,
) -> None:
    """``set_password`` on an open store."""
    account = store.read(lambda tx: accounts.find_account(tx, upstream, user))
    if account is None:
        raise PasswdError(
            f"{user} has never logged in at {upstream} through this proxy: log in online once first"
        )
    field = store.read(lambda tx: account_keys.record(tx, account))
    if password is None:

        def remove(tx: Tx) -> None:
            offline_logins.clear_local_password(tx, account)
            if field is not None:
                kept = [
                    w
                    for w in account_keys.wrappings(tx, account)
                    if key_wrapping.kind_of(w) != key_wrapping.LOCAL
                ]
                account_keys.set_wrappings(tx, account, kept)
                account_keys.set_entry(tx, account, "pending_local", None)

        store.write(remove)
        return
    record = offline_logins.make_local_password(user.encode(), password, params)
    pending = None
    if field is not None:
        if not isinstance(field.get("public"), str):
            raise PasswdError(f"the encryption record of {user} is unusable: not changed")
        pending = key_drop.seal_local(field, account.id, user.encode(), password, params)

    def put(tx: Tx) -> None:
        offline_logins.set_local_password(tx, account, record)
        if pending is not None:
            account_keys.set_entry(tx, account, "pending_local", pending)

    store.write(put)


def is_encrypted(state_dir: Path, upstream: str, user: str) -> bool:
    """Whether the account's replica is encrypted (what passwd tells the user next)."""
    store = Store(state_dir / "replica")
    try:
        account = store.read(lambda tx: accounts.find_account(tx, upstream, user))
        return account is not None and store.keyring.is_encrypted(account.id)
    finally:
        store.close()
