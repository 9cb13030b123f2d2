"""Outbox.perform_all (MULTIAPPEND, RFC 3502): several operations applied to the replica
in one transaction and queued in order, replayed in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapproxy.outbox.operations import AppendMessage
from imapproxy.upstream.errors import UpstreamUnreachable
from tests.unit.outbox.fake import ScriptedLink
from tests.unit.outbox.test_runner import DATE, World, raw, run


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _appends(world: World, *numbers: int) -> list[AppendMessage]:
    drafts = world.box("Drafts")
    return [AppendMessage(drafts.id, "Drafts", (), DATE, len(raw(n)), data=raw(n)) for n in numbers]


def test_all_in_the_replica_at_once_and_replayed_in_order(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    results = run(box.perform_all(_appends(world, 21, 22, 23)))
    assert [int(uid) for _, uid in results] == [1, 2, 3]
    assert len(world.messages("Drafts")) == 3
    assert len(box.pending()) == 3
    assert run(box.drain()) is True
    upstream = [m.raw for m in world.up.boxes["Drafts"].messages.values()]
    assert upstream == [raw(21), raw(22), raw(23)]


def test_one_that_cannot_be_applied_leaves_none(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    broken = _appends(world, 31, 32)
    broken.append(AppendMessage(10**6, "Gone", (), DATE, 3, data=b"abc"))  # no such mailbox
    with pytest.raises(AssertionError):
        run(box.perform_all(broken))
    assert world.messages("Drafts") == []
    assert box.pending() == []
