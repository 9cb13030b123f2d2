"""Flag replay: the per-flag rule when another device changed a message meanwhile
(UNCHANGEDSINCE / MODIFIED, RFC 7162 §3.1.3), plain deltas without CONDSTORE, and
consecutive flag entries going up as one STORE with each entry's exactly-once intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imapproxy.outbox.flags import merge_flags
from imapproxy.outbox.operations import StoreFlags
from imapproxy.outbox.runner import Outbox
from imapproxy.server.handlers.messages import flag_change
from imapproxy.store import mailboxes
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnreachable
from tests.unit.outbox.fake import LOST, ScriptedLink, UpMailbox, UpMessage
from tests.unit.outbox.test_runner import DATE, World, raw, run

# -- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "add", "remove", "upstream", "expected"),
    [
        # nobody else changed anything: the user's delta
        ((), ("\\Seen",), (), (), {"\\Seen"}),
        # the other device flagged it: both changes kept
        ((), ("\\Seen",), (), ("\\Flagged",), {"\\Seen", "\\Flagged"}),
        # the other device also read it: same result, nothing lost
        ((), ("\\Seen",), (), ("\\Seen",), {"\\Seen"}),
        # the user unflagged it, the other device labelled it: both
        (("\\Flagged",), (), ("\\Flagged",), ("\\Flagged", "$Work"), {"$Work"}),
        # the other device marked it unread meanwhile, the user only flagged it: unread
        (("\\Seen",), ("\\Flagged",), (), (), {"\\Flagged"}),
        # the other device removed a flag the user did not touch: it stays removed
        (("\\Seen", "$Todo"), (), ("\\Seen",), ("\\Seen",), set()),
        # a delta on a flag the base already had is no change of the user's: upstream's
        (("\\Seen",), ("\\Seen",), (), (), set()),
        ((), (), ("\\Seen",), ("\\Seen",), {"\\Seen"}),
        # flags compare case-insensitively
        ((), ("\\seen",), (), ("\\SEEN",), {"\\SEEN"}),
    ],
)
def test_merge_rule(
    base: tuple[str, ...],
    add: tuple[str, ...],
    remove: tuple[str, ...],
    upstream: tuple[str, ...],
    expected: set[str],
) -> None:
    assert set(merge_flags(base, add, remove, upstream)) == expected


# -- replay against a CONDSTORE upstream -------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def condstore(world: World) -> None:
    """The upstream keeps modseqs, and the replica knows INBOX as of the current one."""
    world.up.capabilities.add("CONDSTORE")
    known = world.up.boxes["INBOX"].highestmodseq
    world.store.write(
        lambda tx: mailboxes.put(tx, world.box("INBOX", tx).with_(upstream_highestmodseq=known))
    )


def change(world: World, uids: list[int], mode: str, flags: tuple[str, ...]) -> StoreFlags:
    """What the STORE handler queues for ``STORE uids mode FLAGS (flags)``."""
    box = world.box("INBOX")
    targets = [m for m in world.messages("INBOX") if m.uid in uids]

    class _Session:
        class account:
            store = world.store

            class account:
                id = world.account.id

    operation = flag_change(_Session(), box, targets, mode, flags)  # type: ignore[arg-type]
    assert operation is not None
    return operation


def offline(world: World) -> Outbox:
    """The outbox while the link is down: every change applied and queued."""
    return world.outbox(ScriptedLink(world.up, *[UpstreamUnreachable("down")] * 50))


def back_online(world: World, *outcomes: Any) -> Outbox:
    return world.outbox(ScriptedLink(world.up, *outcomes))


def replica_flags(world: World) -> dict[int, set[str]]:
    return {m.upstream_uid: set(m.flags) for m in world.messages("INBOX")}


def upstream_flags(world: World) -> dict[int, set[str]]:
    return {u: set(m.flags) for u, m in world.up.boxes["INBOX"].messages.items()}


def test_entry_records_the_modseq_the_replica_knew(world: World) -> None:
    condstore(world)
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    [entry] = box.pending()
    assert entry.args["modseq"] == world.up.boxes["INBOX"].highestmodseq


def test_unchanged_message_gets_the_delta_conditionally(world: World) -> None:
    condstore(world)
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    since = world.up.boxes["INBOX"].highestmodseq
    assert run(back_online(world).drain()) is True
    assert f"STORE + UNCHANGEDSINCE {since}" in world.up.commands
    assert "FETCH" not in world.up.commands  # no conflict, nothing fetched
    assert upstream_flags(world)[1] == {"\\Seen"}


def test_change_made_on_another_device_meanwhile_is_kept(world: World) -> None:
    condstore(world)
    online = world.outbox(ScriptedLink(world.up))
    run(online.perform(change(world, [2, 3], "+", ("\\Flagged",))))
    condstore(world)  # the replica knows 2 and 3 flagged
    box = offline(world)
    # Offline here: read message 1, replace message 2's flags, unflag message 3.
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    run(box.perform(change(world, [2], "", ("\\Seen",))))  # FLAGS (\Seen): -\Flagged +\Seen
    run(box.perform(change(world, [3], "-", ("\\Flagged",))))
    # Meanwhile, directly on the upstream: 1 labelled, 2 labelled, 3 marked read.
    world.up.boxes["INBOX"].change_flags(1, add={"$Work"})
    world.up.boxes["INBOX"].change_flags(2, add={"$Work"})
    world.up.boxes["INBOX"].change_flags(3, add={"\\Seen"})
    assert run(back_online(world).drain()) is True
    assert back_online(world).pending() == []
    assert upstream_flags(world) == {
        1: {"\\Seen", "$Work"},
        2: {"\\Seen", "$Work"},
        3: {"\\Seen"},
    }
    assert any(c.startswith("STORE + UNCHANGEDSINCE") for c in world.up.commands)
    assert "FETCH" in world.up.commands  # the MODIFIED ones were looked at
    # The replica follows the upstream at once, not only at the next sync.
    assert replica_flags(world) == upstream_flags(world)


def test_other_device_cleared_a_flag_the_user_left_alone(world: World) -> None:
    condstore(world)
    online = world.outbox(ScriptedLink(world.up))
    run(online.perform(change(world, [1], "+", ("\\Seen",))))
    condstore(world)  # the replica knows message 1 as read
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Flagged",))))
    world.up.boxes["INBOX"].change_flags(1, remove={"\\Seen"})  # marked unread on the phone
    run(back_online(world).drain())
    assert upstream_flags(world)[1] == {"\\Flagged"}
    assert replica_flags(world)[1] == {"\\Flagged"}


def test_expunged_meanwhile_is_ignored(world: World) -> None:
    condstore(world)
    box = offline(world)
    run(box.perform(change(world, [1, 2], "+", ("\\Seen",))))
    world.up.boxes["INBOX"].change_flags(1, add={"\\Deleted"})
    del world.up.boxes["INBOX"].messages[1]
    assert run(back_online(world).drain()) is True
    assert upstream_flags(world) == {2: {"\\Seen"}, 3: set()}


def test_without_condstore_plain_deltas(world: World) -> None:
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    world.up.boxes["INBOX"].change_flags(1, add={"$Work"})
    run(back_online(world).drain())
    assert world.up.commands == ["SELECT", "STORE +"]
    assert upstream_flags(world)[1] == {"\\Seen", "$Work"}


def test_modseq_of_another_uidvalidity_is_not_used(world: World) -> None:
    condstore(world)
    box = offline(world)
    run(box.perform(change(world, [2], "+", ("\\Seen",))))
    old = world.up.boxes["INBOX"].messages
    renumbered = UpMailbox(70)
    for uid in (3, 1, 2):
        renumbered.add(old[uid])
    world.up.boxes["INBOX"] = renumbered
    run(back_online(world).drain())
    assert not any("UNCHANGEDSINCE" in c for c in world.up.commands)
    assert [u for u, m in renumbered.messages.items() if m.flags] == [3]


# -- batches ------------------------------------------------------------------------------


def more_messages(world: World, count: int) -> None:
    for n in range(4, 4 + count):
        up_uid = world.up.boxes["INBOX"].add(UpMessage(raw(n), DATE))
        world.store.write(lambda tx, n=n, u=up_uid: world._add(tx, "INBOX", u, raw(n)))


def stores(world: World) -> list[str]:
    return [c for c in world.up.commands if c.startswith("STORE")]


@pytest.mark.parametrize("with_condstore", [False, True])
def test_consecutive_flag_entries_go_up_as_one_store(world: World, with_condstore: bool) -> None:
    more_messages(world, 7)
    if with_condstore:
        condstore(world)
    box = offline(world)
    for uid in range(1, 11):
        run(box.perform(change(world, [uid], "+", ("\\Seen",) if uid % 5 else ("\\Flagged",))))
    assert len(box.pending()) == 10
    assert run(back_online(world).drain()) is True
    assert back_online(world).pending() == []
    assert len(stores(world)) == 2  # one per distinct delta
    assert upstream_flags(world) == {
        u: ({"\\Seen"} if u % 5 else {"\\Flagged"}) for u in range(1, 11)
    }
    assert replica_flags(world) == upstream_flags(world)


def test_a_message_named_twice_splits_the_batch_and_keeps_order(world: World) -> None:
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    run(box.perform(change(world, [2], "+", ("\\Seen",))))
    run(box.perform(change(world, [1], "-", ("\\Seen",))))
    run(box.perform(change(world, [3], "+", ("\\Seen",))))
    run(back_online(world).drain())
    assert stores(world) == ["STORE +", "STORE -", "STORE +"]
    assert upstream_flags(world) == {1: set(), 2: {"\\Seen"}, 3: {"\\Seen"}}


def test_other_operations_end_a_batch(world: World) -> None:
    box = offline(world)
    run(box.perform(change(world, [1], "+", ("\\Seen",))))
    run(box.perform(world.append(8)))
    run(box.perform(change(world, [2], "+", ("\\Seen",))))
    run(back_online(world).drain())
    assert [c for c in world.up.commands if c != "SELECT"] == ["STORE +", "APPEND", "STORE +"]


def test_batch_answer_lost_every_entry_in_doubt_then_sent_once_more(world: World) -> None:
    box = offline(world)
    for uid in (1, 2, 3):
        run(box.perform(change(world, [uid], "+", ("\\Seen",))))
    lost = back_online(world, LOST)
    assert run(lost.drain()) is False
    entries = lost.pending()
    assert len(entries) == 3 and all(e.in_doubt for e in entries)
    assert run(lost.drain()) is True
    assert lost.pending() == [] and stores(world) == ["STORE +", "STORE +"]
    assert upstream_flags(world) == {1: {"\\Seen"}, 2: {"\\Seen"}, 3: {"\\Seen"}}


def test_refused_batch_is_replayed_entry_by_entry(world: World) -> None:
    box = offline(world)
    for uid in (1, 2):
        run(box.perform(change(world, [uid], "+", ("\\Seen",))))
    world.up.refuse["STORE +"] = UpstreamRefused("NO", None, "nope")
    run(back_online(world).drain())
    # Each entry met the refusal on its own: two refused entries, none dropped.
    from imapproxy.store import outbox as stored

    refused = world.store.read(lambda tx: stored.refused(tx, world.account.id))
    assert len(refused) == 2 and back_online(world).pending() == []
    assert stores(world) == ["STORE +"] * 3
    assert replica_flags(world)[1] == set() and replica_flags(world)[2] == set()


def test_exactly_once_survives_a_kill_between_mark_and_send(world: World) -> None:
    """Marked attempted as a batch, the process died before the command left: a new
    runner treats them as in doubt and sends them (flag deltas are safe to resend)."""
    box = offline(world)
    for uid in (1, 2):
        run(box.perform(change(world, [uid], "+", ("\\Seen",))))
    from imapproxy.store import outbox as stored

    world.store.write(
        lambda tx: [stored.mark_attempted(tx, e) for e in stored.pending(tx, world.account.id)]
    )
    restarted = world.outbox(ScriptedLink(world.up))
    assert all(e.in_doubt for e in restarted.pending())
    assert run(restarted.drain()) is True
    assert upstream_flags(world) == {1: {"\\Seen"}, 2: {"\\Seen"}, 3: set()}


def test_offline_a_change_does_not_pay_for_reading_the_queue(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is chosen only once the link is up: while it is down, each queued
    change costs the same however long the queue is."""
    from imapproxy.outbox import runner

    chosen: list[int] = []
    real = runner._flag_batch
    monkeypatch.setattr(runner, "_flag_batch", lambda e: chosen.append(len(e)) or real(e))
    box = offline(world)
    for uid in (1, 2, 3):
        run(box.perform(change(world, [uid], "+", ("\\Seen",))))
    assert chosen == [] and len(box.pending()) == 3
    assert run(back_online(world).drain()) is True
    assert chosen == [3] and stores(world) == ["STORE +"]
