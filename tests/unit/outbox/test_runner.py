"""The outbox runner against an in-memory upstream: replica first, queued offline, the
upstream's answer or refusal in time, and exactly once however a replay is cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imapproxy.notify import Notifier
from imapproxy.outbox.folders import CreateMailbox, SetSubscription
from imapproxy.outbox.operations import AppendMessage, CopyMessages, ExpungeMessages, StoreFlags
from imapproxy.outbox.refs import ref_of
from imapproxy.outbox.replica import RECOVERED
from imapproxy.outbox.runner import Outbox
from imapproxy.server.handlers.messages import flag_change
from imapproxy.store import Store, accounts, cache, mailboxes, messages, outbox
from imapproxy.store.outbox import FAILED, REFUSED
from imapproxy.types import UID
from imapproxy.upstream.errors import AuthenticationFailed, UpstreamRefused, UpstreamUnreachable
from tests.unit.outbox.fake import LOST, FakeUpstream, ScriptedLink, UpMailbox, UpMessage

DATE = "01-Jan-2024 10:00:00 +0000"


def raw(n: int) -> bytes:
    body = "body" * n  # messages of different sizes, as real ones usually are
    return f"From: a@example.org\r\nMessage-ID: <m{n}@example.org>\r\n\r\n{body}\r\n".encode()


class World:
    """A replica of INBOX (3 messages), Drafts and Archive, equal to the fake upstream."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path / "replica")
        self.up = FakeUpstream()
        self.account = self.store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "u"))
        self.clock = Clock()
        self.notifier = Notifier()
        for name, validity in (("INBOX", 7), ("Drafts", 8), ("Archive", 9)):
            self.up.boxes[name] = UpMailbox(validity)

            def create(tx: Any, name: str = name, validity: int = validity) -> None:
                box = mailboxes.create(tx, self.account.id, name)
                mailboxes.put(tx, box.with_(upstream_uidvalidity=validity, upstream_uidnext=1))

            self.store.write(create)
        for n in (1, 2, 3):
            up_uid = self.up.boxes["INBOX"].add(UpMessage(raw(n), DATE))
            self.store.write(lambda tx, n=n, u=up_uid: self._add(tx, "INBOX", u, raw(n)))
        self.store.write(
            lambda tx: mailboxes.put(tx, self.box("INBOX", tx).with_(upstream_uidnext=4))
        )

    def _add(self, tx: Any, name: str, up_uid: int, data: bytes) -> None:
        from imapproxy.outbox import replica

        box = mailboxes.find(tx, self.account.id, name)
        blob = cache.new_blob(tx, self.account.id)
        cache.put(tx, self.account.id, blob, cache.Kind.FULL, data)
        box, _ = replica.add(tx, box, up_uid, (), DATE, len(data), blob)
        mailboxes.put(tx, box)

    def box(self, name: str, tx: Any = None) -> Any:
        if tx is not None:
            return mailboxes.find(tx, self.account.id, name)
        return self.store.read(lambda tx: mailboxes.find(tx, self.account.id, name))

    def messages(self, name: str) -> list[Any]:
        box = self.box(name)
        return self.store.read(lambda tx: list(messages.iterate(tx, self.account.id, box.id)))

    def outbox(self, link: ScriptedLink) -> Outbox:
        return Outbox(self.store, self.account, link, self.notifier, self.clock, 3.0)  # type: ignore[arg-type]

    def refs(self, name: str, uids: list[int], with_id: bool = True) -> tuple[Any, ...]:
        found = [m for m in self.messages(name) if m.uid in uids]
        return self.store.read(
            lambda tx: tuple(ref_of(tx, self.account.id, m, with_id) for m in found)
        )

    def flags(self, name: str, uid: int, session: Any = None) -> StoreFlags:
        box = self.box(name)
        targets = [m for m in self.messages(name) if m.uid == uid]

        class _Session:
            class account:
                store = self.store

                class account:
                    id = self.account.id

        operation = flag_change(_Session(), box, targets, "+", ("\\Flagged",))  # type: ignore[arg-type]
        assert operation is not None
        return operation

    def append(self, n: int) -> AppendMessage:
        box = self.box("Drafts")
        data = raw(n)
        return AppendMessage(box.id, box.name, ("\\Draft",), DATE, len(data), data=data)

    def move(self, uids: list[int]) -> CopyMessages:
        source, target = self.box("INBOX"), self.box("Archive")
        return CopyMessages(
            source.id,
            source.name,
            source.upstream_uidvalidity,
            target.id,
            target.name,
            target.upstream_uidvalidity,
            target.upstream_uidnext,
            True,
            self.refs("INBOX", uids),
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def run(coroutine: Any) -> Any:
    d = defer.ensureDeferred(coroutine)
    assert d.called, "the scripted link answers synchronously"
    if isinstance(d.result, Failure):
        failure = d.result
        d.addErrback(lambda _: None)
        failure.raiseException()
    return d.result


def _subscribe(world: World, name: str = "Archive") -> SetSubscription:
    return SetSubscription(name, True)


# -- replica first ---------------------------------------------------------------------


def test_online_change_reaches_upstream_and_leaves_the_queue(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up))
    run(box.perform(world.flags("INBOX", 1)))
    assert box.pending() == []
    assert world.up.boxes["INBOX"].messages[1].flags == {"\\Flagged"}
    assert world.messages("INBOX")[0].flags == ("\\Flagged",)


def test_offline_change_is_applied_at_once_and_queued(world: World) -> None:
    link = ScriptedLink(world.up, UpstreamUnreachable("down"))
    box = world.outbox(link)
    validity, uid = run(box.perform(world.append(9)))
    drafts = world.messages("Drafts")
    assert [m.uid for m in drafts] == [uid] and drafts[0].upstream_uid is None
    assert validity == world.box("Drafts").uidvalidity
    [entry] = box.pending()
    assert entry.attempts == 0 and world.up.commands == []
    # Back online: replayed once, linked to the upstream UID, the client's UID kept.
    assert run(box.drain()) is True
    assert box.pending() == []
    [landed] = world.up.boxes["Drafts"].messages.values()
    assert landed.raw == raw(9) and landed.flags == {"\\Draft"}
    assert [(m.uid, m.upstream_uid) for m in world.messages("Drafts")] == [(uid, 1)]


def test_no_answer_in_time_means_ok_and_still_queued(world: World) -> None:
    gate: defer.Deferred[None] = defer.Deferred()
    box = world.outbox(ScriptedLink(world.up, gate))
    d = defer.ensureDeferred(box.perform(world.flags("INBOX", 2)))
    assert not d.called
    world.clock.advance(3.0)
    assert d.called and d.result is None
    assert len(box.pending()) == 1
    gate.callback(None)
    assert box.pending() == [] and world.up.boxes["INBOX"].messages[2].flags == {"\\Flagged"}


# -- exactly once ----------------------------------------------------------------------


def test_answer_lost_leaves_entry_in_doubt_and_the_replay_does_not_duplicate(
    world: World,
) -> None:
    box = world.outbox(ScriptedLink(world.up, LOST))
    run(box.perform(world.append(5)))  # the client hears OK: applied and queued
    [entry] = box.pending()
    assert entry.attempts == 1 and entry.in_doubt
    assert len(world.up.boxes["Drafts"].messages) == 1  # it did land
    assert run(box.drain()) is True
    assert len(world.up.boxes["Drafts"].messages) == 1, "in-doubt APPEND sent again"
    assert world.up.commands.count("APPEND") == 1
    assert [m.upstream_uid for m in world.messages("Drafts")] == [1]


def test_killed_between_attempted_mark_and_send(world: World) -> None:
    """The mark was committed, the process died before the command left: the restarted
    process finds nothing upstream and sends it (once)."""
    offline = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(offline.perform(world.append(6)))
    [entry] = offline.pending()
    world.store.write(lambda tx: outbox.mark_attempted(tx, entry))
    restarted = world.outbox(ScriptedLink(world.up))
    assert run(restarted.drain()) is True
    assert world.up.commands.count("APPEND") == 1
    assert len(world.up.boxes["Drafts"].messages) == 1


def test_in_doubt_move_that_happened_is_linked_not_repeated(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, LOST))
    _, pairs, expunged = run(box.perform(world.move([1, 2])))
    assert expunged == [1, 2] and [m.uid for m in world.messages("INBOX")] == [3]
    assert box.pending()[0].in_doubt
    run(box.drain())
    assert world.up.commands.count("MOVE") == 1
    assert sorted(world.up.boxes["Archive"].messages) == [1, 2]
    archive = world.messages("Archive")
    assert [m.uid for m in archive] == [d for _, d in pairs]
    assert sorted(m.upstream_uid for m in archive) == [1, 2]


def test_in_doubt_copy_that_did_not_happen_is_sent(world: World) -> None:
    operation = world.move([3])
    operation = CopyMessages(**{**operation.__dict__, "move": False})
    offline = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(offline.perform(operation))
    [entry] = offline.pending()
    world.store.write(lambda tx: outbox.mark_attempted(tx, entry))
    run(world.outbox(ScriptedLink(world.up)).drain())
    assert world.up.commands.count("COPY") == 1
    assert len(world.up.boxes["Archive"].messages) == 1
    assert len(world.up.boxes["INBOX"].messages) == 3


def test_two_drains_send_once(world: World) -> None:
    gate: defer.Deferred[None] = defer.Deferred()
    offline = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(offline.perform(world.append(7)))
    box = world.outbox(ScriptedLink(world.up, gate))
    first = defer.ensureDeferred(box.drain())
    second = defer.ensureDeferred(box.drain())
    gate.callback(None)
    assert first.called and second.called
    assert world.up.commands.count("APPEND") == 1


def test_dependent_entry_uses_the_upstream_uid_learned_meanwhile(world: World) -> None:
    """APPEND offline, then flag it: the flag replay names the appended message's real
    upstream UID, never the local one."""
    box = world.outbox(
        ScriptedLink(world.up, UpstreamUnreachable("down"), UpstreamUnreachable("down"))
    )
    world.up.boxes["Drafts"].add(UpMessage(raw(99), DATE))  # upstream UID 1 is another message
    _, uid = run(box.perform(world.append(8)))
    run(box.perform(world.flags("Drafts", uid)))
    assert run(box.drain()) is True
    drafts = world.up.boxes["Drafts"].messages
    assert drafts[1].flags == set(), "flag landed on another message"
    assert drafts[2].flags == {"\\Draft", "\\Flagged"}


def test_uidvalidity_change_rematches_instead_of_acting_on_other_messages(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(box.perform(world.flags("INBOX", 2)))
    # Upstream renumbers: same messages, other order, new UIDVALIDITY.
    old = world.up.boxes["INBOX"].messages
    renumbered = UpMailbox(70)
    for uid in (3, 1, 2):
        renumbered.add(old[uid])
    world.up.boxes["INBOX"] = renumbered
    run(box.drain())
    flagged = [u for u, m in renumbered.messages.items() if m.flags]
    assert flagged == [3] and renumbered.messages[3].raw == raw(2)


# -- refusals --------------------------------------------------------------------------


def test_refusal_in_time_is_undone_and_reaches_the_client(world: World) -> None:
    world.up.refuse["SUBSCRIBE"] = UpstreamRefused("NO", None, "not allowed")
    box = world.outbox(ScriptedLink(world.up))
    with pytest.raises(UpstreamRefused, match="not allowed"):
        run(box.perform(_subscribe(world)))
    assert not world.box("Archive").subscribed
    assert box.pending() == []
    assert world.store.read(lambda tx: outbox.refused(tx, world.account.id)) == []


def test_refused_replay_is_kept_recovered_and_noted(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(box.perform(world.append(4)))
    world.up.refuse["APPEND"] = UpstreamRefused("NO", None, "[OVERQUOTA] quota exceeded")
    run(box.drain())
    assert box.pending() == []
    [refused] = world.store.read(lambda tx: outbox.refused(tx, world.account.id))
    assert refused.state == REFUSED and "quota" in refused.reason and refused.op == "append"
    assert world.messages("Drafts") == []  # the replica follows the upstream again
    [kept] = world.messages(RECOVERED)
    data = world.store.read(lambda tx: cache.get(tx, world.account.id, kept.blob, cache.Kind.FULL))
    assert data == raw(4)
    notes = [m for m in world.messages("INBOX") if m.upstream_uid is None]
    assert len(notes) == 1


def test_refused_move_brings_the_messages_back(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    run(box.perform(world.move([1])))
    del world.up.boxes["Archive"]
    run(box.drain())
    inbox = world.messages("INBOX")
    assert sorted(m.upstream_uid for m in inbox if m.upstream_uid) == [1, 2, 3]
    assert world.messages("Archive") == []


def test_a_bug_while_linking_is_kept_as_failed_and_does_not_block(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = world.outbox(
        ScriptedLink(world.up, UpstreamUnreachable("down"), UpstreamUnreachable("down"))
    )
    run(box.perform(world.append(1)))
    run(box.perform(_subscribe(world)))

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(AppendMessage, "link_answer", broken)
    assert run(box.drain()) is True
    [failed] = world.store.read(lambda tx: outbox.refused(tx, world.account.id))
    assert failed.state == FAILED and failed.op == "append"
    assert world.up.commands.count("APPEND") == 1 and "Archive" in world.up.subscribed
    run(box.drain())
    assert world.up.commands.count("APPEND") == 1


def test_rejected_credentials_pause_replay_until_a_new_login(world: World) -> None:
    refused = AuthenticationFailed("NO", None, "[AUTHENTICATIONFAILED] bad password")
    link = ScriptedLink(world.up, refused)
    box = world.outbox(link)
    run(box.perform(world.flags("INBOX", 3)))
    assert box.paused() is not None and len(box.pending()) == 1
    run(box.drain())
    assert link.uses == 1, "a paused outbox must not retry the stale credentials"
    box.resume()
    assert run(box.drain()) is True
    assert world.up.boxes["INBOX"].messages[3].flags == {"\\Flagged"}


def test_expunge_replays_uid_expunge_of_only_the_users_messages(world: World) -> None:
    world.up.boxes["INBOX"].messages[2].flags.add("\\Deleted")  # another client's
    box = world.outbox(ScriptedLink(world.up, UpstreamUnreachable("down")))
    ops = world.flags("INBOX", 1)
    run(
        box.perform(
            StoreFlags(
                ops.mailbox,
                ops.mailbox_name,
                ops.validity,
                tuple(type(c)(("\\Deleted",), (), c.refs) for c in ops.changes),
            )
        )
    )
    inbox = world.box("INBOX")
    run(box.perform(ExpungeMessages(inbox.id, "INBOX", 7, world.refs("INBOX", [1]))))
    run(box.drain())
    assert sorted(world.up.boxes["INBOX"].messages) == [2, 3]


def test_folder_created_offline_then_filled(world: World) -> None:
    box = world.outbox(ScriptedLink(world.up, *[UpstreamUnreachable("down")] * 2))
    run(box.perform(CreateMailbox("Trips")))
    trips = world.box("Trips")
    data = raw(11)
    run(box.perform(AppendMessage(trips.id, "Trips", (), DATE, len(data), data=data)))
    assert run(box.drain()) is True
    assert [m.raw for m in world.up.boxes["Trips"].messages.values()] == [data]
    assert [m.upstream_uid for m in world.messages("Trips")] == [1]


def test_entry_json_is_stable(world: World) -> None:
    operation = world.move([1, 2])
    again = CopyMessages.from_json(operation.to_json())
    assert again == operation
    assert UID(again.refs[0].uid) == 1


# -- implied changes (the \Seen of a FETCH BODY[]) ---------------------------------------


def test_perform_later_applies_and_queues_without_touching_the_link(world: World) -> None:
    gate: defer.Deferred[None] = defer.Deferred()  # a link that would hang
    link = ScriptedLink(world.up, gate)
    box = world.outbox(link)
    box.perform_later(world.flags("INBOX", 2))
    assert world.messages("INBOX")[1].flags == ("\\Flagged",)
    assert len(box.pending()) == 1 and world.up.commands == []
    box.drain_soon()
    gate.callback(None)
    assert box.pending() == [] and world.up.boxes["INBOX"].messages[2].flags == {"\\Flagged"}


def test_an_implied_change_refused_later_is_undone_and_kept(world: World) -> None:
    world.up.refuse["STORE +"] = UpstreamRefused("NO", None, "read-only")
    box = world.outbox(ScriptedLink(world.up))
    box.perform_later(world.flags("INBOX", 1))
    box.drain_soon()
    assert box.pending() == [], world.up.commands
    assert world.messages("INBOX")[0].flags == (), world.up.commands
    [refused] = world.store.read(lambda tx: outbox.refused(tx, world.account.id))
    assert refused.state == REFUSED
