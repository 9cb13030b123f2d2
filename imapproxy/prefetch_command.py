"""`imapproxy prefetch`: make the prefetch policy's bodies readable offline, now.

For the moment before a flight: one run in the foreground with its own upstream
connection, a progress bar on a terminal (a line every few seconds otherwise) and a
summary (messages, bytes, time). The password is read from a prompt, or from the
first line of stdin when that is not a terminal; never from the command line, and
never stored (only the same salted verifier a login keeps).

When a proxy is running on this state directory, its background sync keeps the
message lists current and this only fetches bodies; otherwise the lists of the
folders concerned, and their metadata, are brought up to date first.
"""

from __future__ import annotations

import getpass
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from twisted.internet import threads

from imapproxy.status_report import size
from imapproxy.store import Store, accounts
from imapproxy.store import status as status_record
from imapproxy.store.accounts import Account
from imapproxy.sync.background import METADATA_NEEDS
from imapproxy.sync.content import fetch_missing
from imapproxy.sync.mailbox_list import sync_mailbox_list
from imapproxy.sync.mailboxes import sync_messages
from imapproxy.sync.prefetch import PrefetchPolicy, fetch_bodies, plan
from imapproxy.unlocking import LOCAL, PASSWORD, AccountKeys
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.link import UpstreamLink

#: Bytes per UID FETCH of bodies: large turns, since nothing else waits for the link.
BATCH_BYTES = 4 * 2**20
#: Without a terminal, one progress line this often.
LOG_EVERY_SECONDS = 5.0
BAR_WIDTH = 30


class PrefetchError(Exception):
    """Something the user can fix; the message is the one line they see."""


def read_password(user: str, stdin: IO[str] | None = None) -> bytes:
    stdin = stdin or sys.stdin
    if stdin.isatty():
        password = getpass.getpass(f"Password for {user}: ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise PrefetchError("no password given (type it at the prompt, or pipe it on stdin)")
    return password.encode()


@dataclass
class Progress:
    """A progress bar on a terminal, periodic lines otherwise."""

    messages: int
    bytes: int
    stream: IO[str]
    done_messages: int = 0
    done_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_line: float = 0.0

    def advance(self, messages: int, fetched: int, _seconds: float) -> None:
        self.done_messages += messages
        self.done_bytes += fetched
        if self.stream.isatty():
            self._bar()
        elif time.monotonic() - self._last_line >= LOG_EVERY_SECONDS:
            self._last_line = time.monotonic()
            self.stream.write(
                f"prefetch: {self.done_messages}/{self.messages} messages, "
                f"{size(self.done_bytes)} of about {size(self.bytes)}\n"
            )
            self.stream.flush()

    def _bar(self) -> None:
        share = self.done_messages / self.messages if self.messages else 1.0
        filled = int(BAR_WIDTH * share)
        elapsed = max(time.monotonic() - self.started, 0.001)
        self.stream.write(
            f"\r[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%} "
            f"{self.done_messages}/{self.messages} messages, {size(self.done_bytes)} "
            f"({size(int(self.done_bytes / elapsed))}/s) "
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.stream.isatty() and self.messages:
            self.stream.write("\n")
            self.stream.flush()


def _proxy_running(store: Store, account: Account) -> bool:
    from imapproxy.status_report import _running

    record = store.read(lambda tx: status_record.get(tx, account.id))
    return _running(record.get("pid"))


async def _check(client: UpstreamClient) -> None:
    return None


async def _unlock(store: Store, account: Account, user: str, password: bytes) -> None:
    """An encrypted account's key, opened with the password (its wrapping, or the local
    password's); PrefetchError if neither opens it."""
    if not store.keyring.is_locked(account.id):
        return
    keys = AccountKeys(store, threads.deferToThread)
    if await keys.try_unlock(account, user.encode(), password, (PASSWORD, LOCAL)) is None:
        raise PrefetchError(
            f"the cache of {user} is encrypted and this password does not open it (changed "
            "since?): log in through the proxy with it first (imapproxy unlock if it says so)"
        )


async def run(
    reactor: Any,
    state_dir: Path,
    address: UpstreamAddress,
    user: str,
    password: bytes,
    policy: PrefetchPolicy,
    ca_file: Path | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> None:
    from imapproxy.upstream.errors import AuthenticationFailed, UpstreamUnavailable

    store = Store(state_dir / "replica")
    link = UpstreamLink(reactor, address, user.encode(), password, ca_file)
    began = time.monotonic()
    try:
        try:
            await link.use(_check)
        except AuthenticationFailed as exc:
            raise PrefetchError(f"the upstream refused the login: {exc.text}") from None
        except UpstreamUnavailable as exc:
            raise PrefetchError(f"upstream unreachable: {exc}") from None
        verifier = await threads.deferToThread(accounts.make_verifier, password)
        account = store.write(lambda tx: accounts.ensure_account(tx, address.url(), user))
        store.write(lambda tx: accounts.set_verifier(tx, account, verifier))
        await _unlock(store, account, user, password)
        if not _proxy_running(store, account):
            await _refresh(link, store, account, policy)
        work = plan(store, account.id, policy)
        progress = Progress(work.messages, work.bytes, err)
        full = False
        for mailbox, wanted in work.work:
            full = not await fetch_bodies(
                link, store, mailbox, wanted, lambda: BATCH_BYTES, progress.advance, time.monotonic
            )
            if full:
                break
        progress.finish()
        if full:
            out.write("stopped at the account's cache limit (prefetch never evicts)\n")
        out.write(
            f"prefetched {progress.done_messages} message(s), {size(progress.done_bytes)} "
            f"in {time.monotonic() - began:.1f} s; {work.already} already readable offline "
            f"(folders: {', '.join(policy.folders)}; last {policy.days} days; "
            f"up to {size(policy.max_size)} each)\n"
        )
    except UpstreamUnavailable as exc:
        raise PrefetchError(f"the upstream link broke: {exc}") from None
    finally:
        await link.close()
        store.close()


async def _refresh(
    link: UpstreamLink, store: Store, account: Account, policy: PrefetchPolicy
) -> None:
    """No proxy keeps this replica current now: bring the policy's folders up to date."""

    from imapproxy.outbox.runner import pending_mailboxes
    from imapproxy.store import outbox

    queued = pending_mailboxes(store.read(lambda tx: outbox.pending(tx, account.id)))

    async def folders(client: UpstreamClient) -> object:
        return await sync_mailbox_list(client, store, account.id, queued)

    await link.use(folders)
    from imapproxy.store import mailboxes, messages

    boxes = [
        m
        for m in store.read(lambda tx: mailboxes.all_mailboxes(tx, account.id))
        if policy.covers_folder(m)
    ]
    for mailbox in boxes:

        async def one(client: UpstreamClient, mailbox: Any = mailbox) -> Any:
            return await sync_messages(client, store, mailbox)

        synced, _ = await link.use(one)

        def all_of(tx: Any, box: Any = synced) -> list[Any]:
            return list(messages.iterate(tx, account.id, box.id))

        await fetch_missing(link, store, synced, store.read(all_of), set(METADATA_NEEDS))
