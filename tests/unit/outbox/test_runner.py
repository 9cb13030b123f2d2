"""The outbox runner against a scripted link: never-sent, in-doubt, refused, and a
result delivered to its client whichever drain replayed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from imapproxy.notify import Notifier
from imapproxy.outbox.operations import SetSubscription
from imapproxy.outbox.runner import InDoubt, Outbox
from imapproxy.store import Store, accounts, mailboxes, outbox
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable, UpstreamUnreachable


class ScriptedLink:
    """Answers each use() with the next scripted outcome: an exception, a Deferred, or OK."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    async def use(self, operation: Any) -> Any:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, defer.Deferred):
            await outcome
            outcome = None
        if isinstance(outcome, UpstreamUnreachable):
            raise outcome
        self.sent.append(operation.__self__.args["name"])
        if isinstance(outcome, Exception):
            raise outcome
        return None


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "u"))
    store.write(lambda tx: mailboxes.create(tx, account.id, "Box"))
    return store


def _outbox(store: Store, link: ScriptedLink) -> Outbox:
    account = store.read(lambda tx: accounts.find_account(tx, "imap://x", "u"))
    return Outbox(store, account, link, Notifier())  # type: ignore[arg-type]


def _subscribe(name: str = "Box") -> SetSubscription:
    return SetSubscription({"name": name, "subscribed": True})


def _run(coroutine: Any) -> Any:
    d = defer.ensureDeferred(coroutine)
    assert d.called, "the scripted link answers synchronously"
    if isinstance(d.result, Failure):
        failure = d.result
        d.addErrback(lambda _: None)
        failure.raiseException()
    return d.result


def test_applied_when_the_upstream_answers(store: Store) -> None:
    box = _outbox(store, ScriptedLink(None))
    _run(box.perform(_subscribe()))
    assert box.pending() == []
    assert store.read(lambda tx: mailboxes.find(tx, 1, "Box")).subscribed


def test_never_sent_is_dropped_and_reported(store: Store) -> None:
    link = ScriptedLink(UpstreamUnreachable("down"))
    box = _outbox(store, link)
    with pytest.raises(UpstreamUnavailable, match="not applied"):
        _run(box.perform(_subscribe()))
    assert box.pending() == [] and link.sent == []


def test_in_doubt_is_kept_marked_and_completed_later(store: Store) -> None:
    link = ScriptedLink(UpstreamUnavailable("connection lost"), None)
    box = _outbox(store, link)
    with pytest.raises(InDoubt):
        _run(box.perform(_subscribe()))
    [entry] = box.pending()
    assert entry.args["in_doubt"] is True
    _run(box.drain())
    assert box.pending() == []
    assert link.sent == ["Box", "Box"]
    assert store.read(lambda tx: mailboxes.find(tx, 1, "Box")).subscribed


def test_in_doubt_refusal_meaning_already_done_counts_as_done(store: Store) -> None:
    from imapproxy.protocol import ResponseCode

    already = UpstreamRefused("NO", ResponseCode("ALREADYEXISTS", ()), "exists")
    link = ScriptedLink(UpstreamUnavailable("lost"), already)
    box = _outbox(store, link)
    with pytest.raises(InDoubt):
        _run(box.perform(_subscribe()))
    _run(box.drain())
    assert box.pending() == []


def test_refusal_reaches_the_client_and_removes_the_entry(store: Store) -> None:
    box = _outbox(store, ScriptedLink(UpstreamRefused("NO", None, "quota")))
    with pytest.raises(UpstreamRefused, match="quota"):
        _run(box.perform(_subscribe()))
    assert box.pending() == []


def test_result_reaches_its_client_when_another_drain_replays_it(store: Store) -> None:
    gate: defer.Deferred[None] = defer.Deferred()
    link = ScriptedLink(gate, None, None)
    box = _outbox(store, link)
    first = defer.ensureDeferred(box.perform(_subscribe()))  # holds the lock at the gate
    second = defer.ensureDeferred(
        box.perform(SetSubscription({"name": "Other", "subscribed": True}))
    )
    background = defer.ensureDeferred(box.drain())
    gate.callback(None)
    assert first.called and second.called and background.called
    assert not isinstance(second.result, Failure)
    assert box.pending() == []
    assert store.read(lambda tx: outbox.pending(tx, 1)) == []
