"""Reconcile the upstream's mailbox list into the replica.

LIST with its subscriptions upstream (one round trip with LIST-EXTENDED); a new name gets a replica mailbox with a fresh local
UIDVALIDITY, attributes and subscriptions are refreshed. A name missing from the
answer is not trusted at once: servers omit a folder transiently (a rename or an
index rebuild in progress, a proxy in front failing over), and dropping a replica
mailbox costs its clients a full re-download. It is dropped only when a second LIST
also lacks it and, for a selectable mailbox, STATUS of that name is refused; its
cached content is then freed (store/reclaim.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from imapproxy.store import Store, Tx, mailboxes, subscriptions
from imapproxy.store.reclaim import drop_mailbox
from imapproxy.types import AccountId, MailboxId
from imapproxy.upstream.client import ListEntry, UpstreamClient
from imapproxy.upstream.errors import UpstreamRefused

log = logging.getLogger(__name__)


async def sync_mailbox_list(
    client: UpstreamClient,
    store: Store,
    account: AccountId,
    protected: frozenset[MailboxId] | None = frozenset(),
    queued_since: Callable[[Tx], bool] = lambda tx: False,
) -> list[MailboxId] | None:
    """Returns the ids of replica mailboxes that were removed because upstream lost them,
    or None when nothing was applied (see ``queued_since``).

    ``protected``: mailboxes queued changes still name (a folder created offline whose
    CREATE is not replayed yet): the upstream not listing them proves nothing. None: the
    queue could not be read, so no mailbox is dropped this time.
    ``queued_since``: asked in the transaction that would apply the answer, whether a
    folder change (a client's SUBSCRIBE, CREATE…) was queued after the caller found the
    queue clear. The answer then predates it and would undo it in the replica until the
    replay: nothing is applied, and the next refresh, after the replay, brings the list."""
    entries, subscribed = await client.list_and_subscriptions()
    listed = {mailboxes.normalize_name(e.name) for e in entries}
    missing = [
        m
        for m in store.read(lambda tx: mailboxes.all_mailboxes(tx, account))
        if m.name not in listed
        and not m.extra.get("local")
        and protected is not None
        and m.id not in protected
    ]
    gone = await _confirm_gone(client, missing) if missing else set()

    def apply(tx: Tx) -> list[MailboxId] | None:
        if queued_since(tx):
            return None
        existing = {m.name: m for m in mailboxes.all_mailboxes(tx, account)}
        for entry in entries:
            _refresh(
                tx, account, existing.get(mailboxes.normalize_name(entry.name)), entry, subscribed
            )
        orphans = set(subscriptions.orphans(tx, account)) - listed
        if not client.has("LIST-EXTENDED"):
            # LSUB answered: every subscription is known, not only existing mailboxes'.
            orphans = {mailboxes.normalize_name(n) for n in subscribed} - listed
        removed = []
        for name in sorted(gone):
            mailbox = existing.get(name)
            if mailbox is not None and name not in listed:
                if mailbox.subscribed:
                    orphans.add(name)  # the subscription outlives its mailbox (§6.3.6)
                freed = drop_mailbox(tx, mailbox)
                log.info(
                    "mailbox %r is gone upstream: dropped from the replica (%d blobs freed)",
                    name,
                    freed,
                )
                removed.append(mailbox.id)
        subscriptions.set_orphans(tx, account, orphans)
        return removed

    return store.write(apply)


async def sync_subscriptions(client: UpstreamClient, store: Store, account: AccountId) -> None:
    """LSUB upstream, for the subscriptions that have no mailbox: the one-round-trip
    list sync (LIST-EXTENDED) only tells those of existing mailboxes."""
    names = {mailboxes.normalize_name(n) for n in await client.subscribed()}

    def apply(tx: Tx) -> None:
        existing = {m.name for m in mailboxes.all_mailboxes(tx, account)}
        subscriptions.set_orphans(tx, account, names - existing)

    store.write(apply)


def _refresh(
    tx: Tx,
    account: AccountId,
    current: mailboxes.Mailbox | None,
    entry: ListEntry,
    subscribed: set[str],
) -> None:
    name = mailboxes.normalize_name(entry.name)
    selectable = not any(a.upper() in ("\\NOSELECT", "\\NONEXISTENT") for a in entry.attributes)
    attrs = {
        "delimiter": entry.delimiter,
        "attributes": entry.attributes,
        "subscribed": entry.name in subscribed or name in subscribed,
        "selectable": selectable,
    }
    if current is None:
        mailboxes.create(tx, account, name, **attrs)
    elif any(getattr(current, k) != v for k, v in attrs.items()):
        mailboxes.put(tx, current.with_(**attrs))


async def _confirm_gone(client: UpstreamClient, missing: list[mailboxes.Mailbox]) -> set[str]:
    """The names among missing that the upstream confirms are gone."""
    again = {mailboxes.normalize_name(e.name) for e in await client.list_mailboxes()}
    gone = set()
    for mailbox in missing:
        if mailbox.name in again:
            log.info("mailbox %r was missing from one LIST answer only: kept", mailbox.name)
            continue
        if mailbox.selectable and mailbox.upstream_uidvalidity is not None:
            if client.selected == mailbox.name:
                # A server answers STATUS of the mailbox it has open from the open one,
                # renamed or not: ask about the name with another mailbox open.
                await client.select("INBOX", readonly=True)
            try:
                await client.status(mailbox.name, ("UIDVALIDITY",))
            except UpstreamRefused:
                pass  # NO [NONEXISTENT] (or a server without the code): it is gone
            else:
                log.info("mailbox %r is missing from LIST but answers STATUS: kept", mailbox.name)
                continue
        gone.add(mailbox.name)
    return gone
