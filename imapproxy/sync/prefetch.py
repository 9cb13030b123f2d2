"""Which bodies are made readable offline ahead of time, and fetching them.

A policy names folders (by name, or by special use: "Sent" also covers a folder
marked \\Sent), an age (by INTERNALDATE) and a largest size. The default covers
what people open on a plane: INBOX, Sent and Drafts of the last 90 days, bodies up
to 25 MB. The background sync runs it at low priority while online (in turns of
about STEP_SECONDS on the link); `imapproxy prefetch` runs it once in the foreground.

Settings come from the environment, so the serving proxy and the prefetch command
agree without a configuration file: IMAPPROXY_PREFETCH_FOLDERS (comma separated;
empty turns prefetch off), IMAPPROXY_PREFETCH_DAYS, IMAPPROXY_PREFETCH_MAX_SIZE
(bytes, or with a K/M/G suffix).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imapproxy.protocol import ParseError, parse_datetime
from imapproxy.store import Store, Tx, cache, mailboxes, messages
from imapproxy.store.cache import Kind
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.content import Need, fetch_batch
from imapproxy.types import AccountId
from imapproxy.upstream.link import UpstreamLink

FULL = frozenset({Need(Kind.FULL)})
DEFAULT_FOLDERS = ("INBOX", "Sent", "Drafts")
DEFAULT_DAYS = 90
DEFAULT_MAX_SIZE = 25 * 2**20


class PolicyError(ValueError):
    """A prefetch setting that does not parse; the message says which."""


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text, re.IGNORECASE)
    if match is None:
        raise PolicyError(f"{text!r} is not a size (e.g. 25M)")
    factor = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2).upper()]
    return int(match.group(1)) * factor


@dataclass(frozen=True)
class PrefetchPolicy:
    folders: tuple[str, ...] = DEFAULT_FOLDERS
    days: int = DEFAULT_DAYS
    max_size: int = DEFAULT_MAX_SIZE

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> PrefetchPolicy:
        env = os.environ if env is None else env
        folders: tuple[str, ...] = DEFAULT_FOLDERS
        if "IMAPPROXY_PREFETCH_FOLDERS" in env:
            raw = env["IMAPPROXY_PREFETCH_FOLDERS"]
            folders = tuple(f.strip() for f in raw.split(",") if f.strip())
        try:
            days = int(env.get("IMAPPROXY_PREFETCH_DAYS", DEFAULT_DAYS))
        except ValueError:
            raise PolicyError("IMAPPROXY_PREFETCH_DAYS must be a number of days") from None
        max_size = parse_size(env.get("IMAPPROXY_PREFETCH_MAX_SIZE", str(DEFAULT_MAX_SIZE)))
        return cls(folders, days, max_size)

    @property
    def enabled(self) -> bool:
        return bool(self.folders) and self.days > 0 and self.max_size > 0

    def covers_folder(self, mailbox: Mailbox) -> bool:
        if not mailbox.selectable:
            return False
        uses = {a.upper() for a in mailbox.attributes}
        return any(
            mailbox.name == name
            or (name.upper() == "INBOX" and mailbox.name == "INBOX")
            or "\\" + name.upper() in uses
            for name in self.folders
        )

    def covers(self, message: Message, now: datetime) -> bool:
        if message.upstream_uid is None or message.size > self.max_size:
            return False
        try:
            received = parse_datetime(message.internaldate)
        except (ParseError, ValueError):
            return False
        return received >= now - timedelta(days=self.days)


@dataclass
class Plan:
    """What a prefetch run will fetch, folder by folder, newest first."""

    work: list[tuple[Mailbox, list[Message]]]
    already: int = 0

    @property
    def messages(self) -> int:
        return sum(len(batch) for _, batch in self.work)

    @property
    def bytes(self) -> int:
        return sum(m.size for _, batch in self.work for m in batch)


def plan(
    store: Store, account: AccountId, policy: PrefetchPolicy, now: datetime | None = None
) -> Plan:
    now = now or datetime.now(UTC)

    def scan(tx: Tx) -> Plan:
        result = Plan([])
        if not policy.enabled:
            return result
        boxes = [m for m in mailboxes.all_mailboxes(tx, account) if policy.covers_folder(m)]
        for mailbox in sorted(boxes, key=lambda m: (m.name != "INBOX", m.name)):
            wanted = []
            for message in messages.iterate(tx, account, mailbox.id):
                if not policy.covers(message, now):
                    continue
                if cache.has(tx, account, message.blob, Kind.FULL):
                    result.already += 1
                else:
                    wanted.append(message)
            if wanted:
                wanted.sort(key=lambda m: m.uid, reverse=True)
                result.work.append((mailbox, wanted))
        return result

    return store.read(scan)


def first_batch(wanted: list[Message], budget: int, room: int | None = None) -> list[Message]:
    """The leading messages of wanted that fit in budget bytes (at least one), and in
    room bytes when the cache is limited (possibly none: prefetch never evicts)."""
    size = 0
    for count, message in enumerate(wanted):
        size += message.size
        if room is not None and size > room:
            return wanted[:count]
        if count and size > budget:
            return wanted[:count]
    return list(wanted)


async def fetch_bodies(
    link: UpstreamLink,
    store: Store,
    mailbox: Mailbox,
    wanted: list[Message],
    budget: Callable[[], int],
    done: Callable[[int, int, float], None],
    clock: Callable[[], float],
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Fetch the full bodies of wanted, one batch of about budget() bytes per turn on the
    link; done(messages, bytes, seconds) after each batch.

    With a cache limit, prefetch only fills the room below the account's low water mark
    (store/usage.py) and stops when the next message does not fit: it never evicts, so
    what a client read is never pushed out for mail fetched ahead of time. Returns False
    when it stopped for lack of room."""
    remaining = list(wanted)
    while remaining and not stop():
        batch = first_batch(remaining, budget(), store.cache_room(mailbox.account))
        if not batch:
            return False
        remaining = remaining[len(batch) :]
        began = clock()
        got = await fetch_batch(link, store, mailbox, batch, FULL, prefetched=True, background=True)
        done(len(batch), got, clock() - began)
    return True
