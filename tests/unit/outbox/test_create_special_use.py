"""CREATE-SPECIAL-USE (RFC 6154 §3) through the outbox: the use is in the replica at
once (LIST shows it offline), kept in the queued entry, and given to the upstream's
CREATE; refused there, the mailbox is gone from the replica again."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapproxy import protocol as p
from imapproxy.outbox.folders import CreateMailbox
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnreachable
from tests.unit.outbox.fake import ScriptedLink
from tests.unit.outbox.test_runner import World, run


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_the_use_is_in_the_replica_offline_and_reaches_the_upstream(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(box.perform(CreateMailbox("Old", special_use=("\\Archive",))))
    assert world.box("Old").attributes == ("\\Archive",)
    assert world.up.special_use == {}
    assert run(box.drain()) is True
    assert world.up.special_use == {"Old": ("\\Archive",)}


def test_the_queued_entry_keeps_the_use() -> None:
    create = CreateMailbox("Old", 7, special_use=("\\Archive", "\\Flagged"))
    assert CreateMailbox.from_json(create.to_json()) == create
    # Entries queued before the field existed still read.
    assert CreateMailbox.from_json({"mailbox_name": "Old", "mailbox": 7}).special_use == ()


def test_a_use_the_upstream_refuses_undoes_the_creation(world: World) -> None:
    world.up.refuse["CREATE"] = UpstreamRefused("NO", p.ResponseCode("USEATTR", ()), "no")
    box = world.outbox(ScriptedLink(world.up))
    with pytest.raises(UpstreamRefused):
        run(box.perform(CreateMailbox("Odd", special_use=("\\All",))))
    assert world.box("Odd") is None


def test_the_upstream_command_carries_the_use() -> None:
    wire = b"".join(p.format_command(p.Create("a1", "Old mail", ("\\Archive",)), True))
    assert wire == b'a1 CREATE "Old mail" (USE (\\Archive))\r\n'
