"""Replaying flag changes upstream, so that a change made on another device meanwhile is kept.

What an entry holds (``operations.StoreFlags``): per message, the flags it showed when
the user acted (the *base*, ``Ref.flags``), the difference the user made to it (the
handler records only real changes: a flag set that the message lacked, a flag cleared
that it had), and the upstream HIGHESTMODSEQ the replica knew then (``since``): the
replica's flags were the upstream's as of that modseq.

The rule, per flag (RFC 4549 §4.2.3; mbsync's three-way merge, ``../shared/ANCHORS.md``):
**a flag the user changed takes the user's value; every other flag keeps the
upstream's**. The other device's changes to flags the user did not touch are never
undone, and the user's offline delta is applied only where the other side left the
flag as it was. Where both changed the same flag they agree (a flag is on or off: both
moved it away from the same base), so no change is ever lost to the "other" side; a
flag the other device set and cleared again is indistinguishable from one left alone,
and the user's change applies. ``FLAGS (…)`` (replace) is never sent.

How it goes up:
- With CONDSTORE (and a modseq known for the mailbox, the same UIDVALIDITY):
  ``UID STORE set (UNCHANGEDSINCE since) +FLAGS.SILENT (add)``, then ``-FLAGS.SILENT
  (remove)`` for the messages not reported modified, with UNCHANGEDSINCE raised to the
  highest MODSEQ the first command gave (a mailbox's modseqs only grow, so a change by
  anyone after that command is above it). Messages named in ``[MODIFIED …]`` changed
  on another device since the user acted (RFC 7162 §3.1.3): their FLAGS and MODSEQ are
  fetched, merged by the rule above, and the difference stored conditionally on the
  fetched MODSEQ; a message changed yet again in between is fetched again (a few
  rounds, then stored unconditionally: the merge is still applied, as deltas). The
  merged flags are returned so the replica ends equal to the upstream.
- Without CONDSTORE (or NOMODSEQ, or no modseq known): ``+FLAGS.SILENT``/``-FLAGS.SILENT``
  of the user's difference, which gives the same merge except that a flag the user
  changed is not compared with a concurrent change of the same flag (they agree anyway).
- A message expunged upstream meanwhile is left alone (RFC 4549 §5.1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imapproxy.protocol import FetchAttribute, SequenceSet
from imapproxy.upstream.client import UpstreamClient, as_int, modseq_of, text

log = logging.getLogger(__name__)

#: Conditional retries for a message that keeps changing under us before the merged
#: flags are stored without UNCHANGEDSINCE.
CONFLICT_ROUNDS = 3
CONFLICT_ITEMS = (FetchAttribute("FLAGS"), FetchAttribute("MODSEQ"))


@dataclass(frozen=True)
class Target:
    """One message a delta applies to: the local UID the entry names, its upstream
    UID, and the flags it showed when the user acted."""

    uid: int
    upstream: int
    base: tuple[str, ...]


@dataclass(frozen=True)
class Delta:
    add: tuple[str, ...]
    remove: tuple[str, ...]
    targets: tuple[Target, ...]


def user_changes(
    base: Iterable[str], add: Iterable[str], remove: Iterable[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The flags the user really changed ({UPPER: spelling}): set ones the base lacked,
    cleared ones it had."""
    had = {f.upper() for f in base}
    return (
        {f.upper(): f for f in add if f.upper() not in had},
        {f.upper(): f for f in remove if f.upper() in had},
    )


def merge_flags(
    base: Iterable[str], add: Iterable[str], remove: Iterable[str], upstream: Iterable[str]
) -> tuple[str, ...]:
    """The rule: a flag the user changed (relative to base) takes the user's value, every
    other flag the upstream's. Order: the upstream's flags first, then those added."""
    added, removed = user_changes(base, add, remove)
    out = [f for f in upstream if f.upper() not in removed]
    present = {f.upper() for f in out}
    out += [f for key, f in added.items() if key not in present]
    return tuple(out)


def _set(uids: Iterable[int]) -> SequenceSet:
    return SequenceSet.from_ints(sorted(set(uids)))


async def replay(
    client: UpstreamClient, deltas: Sequence[Delta], since: int | None
) -> dict[int, tuple[str, ...]]:
    """Send deltas (of distinct messages) to the selected mailbox; ``since`` is the modseq
    the entry's flags were known at, None when unknown or no longer meaningful.
    Returns {local uid: upstream flags after the merge} for messages that had changed
    upstream meanwhile (the replica must follow them)."""
    conditional = (
        since is not None
        and client.has("CONDSTORE")
        and getattr(client, "selected_highestmodseq", None) is not None
    )
    conflicts: dict[int, tuple[Delta, Target]] = {}
    for delta in _grouped(deltas):
        uids = [t.upstream for t in delta.targets]
        if not conditional:
            if delta.add:
                await client.store(_set(uids), "+", delta.add)
            if delta.remove:
                await client.store(_set(uids), "-", delta.remove)
            continue
        assert since is not None
        modified: set[int] = set()
        ceiling = since
        if delta.add:
            outcome = await client.store(_set(uids), "+", delta.add, unchangedsince=since)
            modified |= outcome.modified
            ceiling = max([since, *(outcome.modseqs.get(u, since) for u in uids)])
        rest = [u for u in uids if u not in modified]
        if delta.remove and rest:
            outcome = await client.store(_set(rest), "-", delta.remove, unchangedsince=ceiling)
            modified |= outcome.modified
        for target in delta.targets:
            if target.upstream in modified:
                conflicts[target.upstream] = (delta, target)
    if not conflicts:
        return {}
    log.info("%d message(s) changed upstream meanwhile: merging flags", len(conflicts))
    return await _resolve(client, conflicts)


def _grouped(deltas: Sequence[Delta]) -> list[Delta]:
    """One delta per distinct (add, remove), in first-seen order: deltas of distinct
    messages commute, so each goes up as one STORE over a UID set."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Target]] = {}
    for delta in deltas:
        groups.setdefault((delta.add, delta.remove), []).extend(delta.targets)
    return [Delta(add, remove, tuple(targets)) for (add, remove), targets in groups.items()]


async def _resolve(
    client: UpstreamClient, conflicts: dict[int, tuple[Delta, Target]]
) -> dict[int, tuple[str, ...]]:
    """Fetch, merge and store conditionally the messages that changed meanwhile."""
    final: dict[int, tuple[str, ...]] = {}
    pending = dict(conflicts)
    for round_ in range(CONFLICT_ROUNDS + 1):
        if not pending:
            break
        items = await client.fetch(_set(pending), CONFLICT_ITEMS)
        current = {
            as_int(i["UID"]): (_flags(i.get("FLAGS")), modseq_of(i.get("MODSEQ")))
            for i in items
            if as_int(i["UID"]) in pending
        }
        # What is not there any more was expunged meanwhile: nothing to do.
        wanted: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
        for up, (flags, _) in current.items():
            delta, target = pending[up]
            merged = merge_flags(target.base, delta.add, delta.remove, flags)
            final[target.uid] = merged
            have = {f.upper() for f in flags}
            keep = {f.upper() for f in merged}
            add = tuple(f for f in merged if f.upper() not in have)
            remove = tuple(f for f in flags if f.upper() not in keep)
            if add or remove:
                wanted.setdefault((add, remove), []).append(up)
        still: dict[int, tuple[Delta, Target]] = {}
        last = round_ == CONFLICT_ROUNDS
        for (add, remove), ups in wanted.items():
            since = None if last else max(current[u][1] for u in ups)
            modified: set[int] = set()
            if add:
                outcome = await client.store(_set(ups), "+", add, unchangedsince=since)
                modified |= outcome.modified
                if since is not None:
                    since = max([since, *outcome.modseqs.values()])
            rest = [u for u in ups if u not in modified]
            if remove and rest:
                outcome = await client.store(_set(rest), "-", remove, unchangedsince=since)
                modified |= outcome.modified
            for up in modified:
                still[up] = pending[up]
        pending = still
    return final


def _flags(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple):
        return ()
    return tuple(f for f in (text(v) for v in value) if f.upper() != "\\RECENT")
