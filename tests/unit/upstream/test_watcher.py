"""The account's watcher connection, against a scripted client and a fake clock: which
commands it sends (NOTIFY, or STATUS polls), what it reports, and how it recovers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task

from imapproxy.protocol import Atom, UntaggedData
from imapproxy.upstream.errors import UpstreamUnavailable, UpstreamUnreachable
from imapproxy.upstream.watcher import (
    ALIVE_FOR_SECONDS,
    COVER_WAIT_SECONDS,
    KEEPALIVE_SECONDS,
    PREPARED_SECONDS,
    MailboxWatcher,
)


class FakeProtocol:
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.on_untagged: Any = None
        self.usable = True

    def drop(self) -> None:
        self.usable = False
        self.closed.callback(None)


class FakeClient:
    def __init__(self, capabilities: set[str]) -> None:
        self.capabilities = capabilities
        self.protocol = FakeProtocol()
        self.sent: list[tuple[str, ...]] = []
        self.statuses: dict[str, dict[str, int]] = {}
        self.logged_out = False

    def has(self, name: str) -> bool:
        return name in self.capabilities

    def watch_items(self) -> tuple[str, ...]:
        return ("MESSAGES",)

    async def notify(self, names: Any, folder_list: bool = False) -> dict[str, Any]:
        if not self.protocol.usable:
            raise UpstreamUnavailable("gone")
        self.sent.append(("NOTIFY", *names, *(("+list",) if folder_list else ())))
        for name in names:
            self.announce(name)  # the STATUS indicator's statement: no news
        return {name: dict(self.statuses.get(name, {"MESSAGES": 1})) for name in names}

    async def noop(self) -> None:
        self.sent.append(("NOOP",))

    async def status(self, name: str, items: Any) -> dict[str, int]:
        if not self.protocol.usable:
            raise UpstreamUnavailable("gone")
        self.sent.append(("STATUS", name))
        return dict(self.statuses.get(name, {"MESSAGES": 1}))

    async def logout(self) -> None:
        self.logged_out = True

    def announce(self, name: str) -> None:
        event = UntaggedData(None, "STATUS", (Atom(name), (Atom("MESSAGES"), 2)))
        self.protocol.on_untagged(event)

    def announce_list(self, name: str) -> None:
        event = UntaggedData(None, "LIST", ((), b"/", Atom(name)))
        self.protocol.on_untagged(event)


def make(
    clients: list[Any], poll: float = 2.0
) -> tuple[MailboxWatcher, task.Clock, list[str], list[int]]:
    clock = task.Clock()
    heard: list[str] = []
    attempts: list[int] = []

    async def connector(*args: Any, **kwargs: Any) -> Any:
        attempts.append(len(attempts))
        outcome = clients.pop(0)
        if isinstance(outcome, defer.Deferred):
            outcome = await outcome  # a connection still being made
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    link = SimpleNamespace(
        connector=connector,
        address=None,
        username=b"u",
        password=b"p",
        ca_file=None,
        mechanism="PASSWORD",
    )
    watcher = MailboxWatcher(clock, link, heard.append, poll_seconds=poll)  # type: ignore[arg-type]
    return watcher, clock, heard, attempts


def test_notify_names_the_watched_mailboxes_and_news_becomes_a_resync() -> None:
    client = FakeClient({"NOTIFY"})
    watcher, clock, heard, _ = make([client])
    watcher.watch({"A"})
    watcher.watch({"A", "B"})
    clock.advance(0)
    # Re-targeting goes through NOTIFY NONE: Dovecot 2.3 watches a replacing SET only
    # with its 30 s fallback check.
    assert client.sent == [("NOTIFY", "A"), ("NOTIFY",), ("NOTIFY", "A", "B")]
    assert watcher.mode == "notify"
    client.announce("B")
    client.announce("B")  # coalesced
    client.announce("Other")  # not watched: ignored
    clock.advance(1)
    assert heard == ["B"]
    clock.advance(KEEPALIVE_SECONDS)
    assert client.sent[-1] == ("NOOP",)


def test_without_notify_a_status_poll_reports_mailboxes_that_moved() -> None:
    client = FakeClient(set())
    watcher, clock, heard, _ = make([client], poll=2.0)
    watcher.watch({"A", "B"})
    assert watcher.mode == "poll"
    assert client.sent == [("STATUS", "A"), ("STATUS", "B")]
    client.statuses["B"] = {"MESSAGES": 5}
    clock.advance(2.0)
    clock.advance(1.0)
    assert heard == ["B"]
    assert client.sent[-2:] == [("STATUS", "A"), ("STATUS", "B")]


def test_a_lost_or_refused_connection_is_retried_with_backoff_and_none_watched_closes() -> None:
    first, second = FakeClient({"NOTIFY"}), FakeClient({"NOTIFY"})
    watcher, clock, _, attempts = make([UpstreamUnreachable("down"), first, second])
    watcher.watch({"A"})
    assert len(attempts) == 1
    clock.advance(1.0)  # first retry after RETRY_MIN_SECONDS
    assert len(attempts) == 2 and first.sent == [("NOTIFY", "A")]
    first.protocol.drop()
    assert first.logged_out
    clock.advance(60.0)
    assert len(attempts) == 3 and second.sent == [("NOTIFY", "A")]
    watcher.watch(set())
    clock.advance(0)
    assert second.logged_out
    assert len(attempts) == 3


def test_close_logs_out_and_stops_watching() -> None:
    client = FakeClient({"NOTIFY"})
    watcher, clock, heard, attempts = make([client])
    watcher.watch({"A"})
    defer.ensureDeferred(watcher.close())
    assert client.logged_out
    watcher.watch({"B"})
    clock.advance(100)
    assert attempts == [0] and heard == []


def test_with_notify_every_mailbox_is_covered_from_the_set_until_the_connection_goes() -> None:
    first, second = FakeClient({"NOTIFY"}), FakeClient({"NOTIFY"})
    watcher, clock, heard, _ = make([first, second])
    covered: list[frozenset[str]] = []
    stated: list[dict[str, Any]] = []
    watcher.on_covered = lambda names, statuses: (covered.append(names), stated.append(statuses))
    clock.advance(5.0)
    watcher.watch({"A"}, {"A", "B", "C"})
    assert first.sent == [("NOTIFY", "A", "B", "C", "+list")]
    assert covered == [frozenset({"A", "B", "C"})]
    assert stated[0]["B"] == {"MESSAGES": 1}
    assert watcher.heard_at("B") is None  # the SET's own STATUS responses are no news
    assert watcher.covered_since("B") == 5.0 and watcher.covered_since("Z") is None
    clock.advance(1.0)
    first.announce("C")
    assert watcher.heard_at("C") == 6.0  # at once, before the coalesced resync
    clock.advance(1.0)
    assert heard == ["C"]
    first.protocol.drop()
    # News may be lost until the next SET: nothing counts as covered meanwhile.
    assert watcher.covered_since("B") is None
    clock.advance(1.0)
    assert second.sent == [("NOTIFY", "A", "B", "C", "+list")]
    assert watcher.covered_since("B") == 8.0


def test_a_client_selecting_a_covered_folder_sends_nothing_until_the_keepalive() -> None:
    """Watching everything, a client's SELECT changes the selected names but not what
    the SET covers: the watcher wakes and asks nothing (it sent a NOOP each time, a
    round trip per SELECT), until the keepalive is due."""
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, _ = make([client])
    watcher.watch(set(), {"A", "B"})
    clock.advance(0)
    assert client.sent == [("NOTIFY", "A", "B", "+list")]
    for selected in ({"A"}, set(), {"B"}, set()):
        clock.advance(1.0)
        watcher.watch(selected, {"A", "B"})
        clock.advance(0)
    assert client.sent == [("NOTIFY", "A", "B", "+list")]
    clock.advance(KEEPALIVE_SECONDS - 4.0)
    assert client.sent[-1] == ("NOOP",) and len(client.sent) == 2
    clock.advance(KEEPALIVE_SECONDS - 1.0)
    assert len(client.sent) == 2
    clock.advance(1.0)
    assert len(client.sent) == 3


def test_replacing_the_set_covers_nothing_until_the_new_set_is_answered() -> None:
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, _ = make([client])
    seen: list[float | None] = []

    async def notify(names: Any, folder_list: bool = False) -> dict[str, Any]:
        seen.append(watcher.covered_since("A"))
        client.sent.append(("NOTIFY", *names))
        return {}

    client.notify = notify  # type: ignore[method-assign]
    watcher.watch(set(), {"A"})
    clock.advance(2.0)
    watcher.watch(set(), {"A", "B"})
    clock.advance(0)
    # While NOTIFY NONE and the new SET run, A was not covered.
    assert seen == [None, None, None]
    assert watcher.covered_since("A") == 2.0


def test_without_notify_only_selected_mailboxes_are_polled_and_nothing_is_covered() -> None:
    client = FakeClient(set())
    watcher, clock, _, _ = make([client], poll=2.0)
    watcher.watch({"A"}, {"A", "B", "C"})
    clock.advance(0)
    assert client.sent == [("STATUS", "A")]
    clock.advance(2.0)
    assert client.sent == [("STATUS", "A"), ("STATUS", "A")]
    assert watcher.covered_since("A") is None


def test_cover_lapses_when_the_connection_stops_answering() -> None:
    """A NOOP a minute keeps NOTIFY's cover; a connection that stops answering (a
    laptop asleep) loses it until it answers again."""
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, _ = make([client])
    watcher.watch(set(), {"A"})
    clock.advance(0)
    assert watcher.covered_since("A") == 0.0
    clock.advance(KEEPALIVE_SECONDS)  # a NOOP answered: still covered
    assert client.sent[-1] == ("NOOP",)
    assert watcher.covered_since("A") == 0.0

    async def silent() -> None:
        await defer.Deferred()  # never answers

    client.noop = silent  # type: ignore[method-assign]
    clock.advance(KEEPALIVE_SECONDS)
    assert watcher.covered_since("A") == 0.0  # the last answer is recent enough
    clock.advance(ALIVE_FOR_SECONDS)
    assert watcher.covered_since("A") is None


def test_watching_everything_covers_the_folder_list_and_its_news_is_told() -> None:
    """With every mailbox watched, NOTIFY also reports mailboxes created, renamed or
    deleted and subscriptions changed (``* LIST``): the folder list is covered too."""
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, _ = make([client])
    told: list[None] = []
    watcher.on_list_change = lambda: told.append(None)
    watcher.watch({"A"})
    clock.advance(0)
    assert client.sent == [("NOTIFY", "A")]
    assert watcher.list_covered_since() is None  # only selected ones: not the list
    clock.advance(3.0)
    watcher.watch({"A"}, {"A", "B"})
    clock.advance(0)
    assert client.sent[-1] == ("NOTIFY", "A", "B", "+list")
    assert watcher.list_covered_since() == 3.0
    assert watcher.list_heard_at() is None
    clock.advance(1.0)
    client.announce_list("New")
    client.announce_list("New/Child")  # coalesced
    assert watcher.list_heard_at() == 4.0
    clock.advance(1.0)
    assert told == [None]
    client.protocol.drop()
    assert watcher.list_covered_since() is None


def test_a_connection_made_ahead_is_used_once_there_is_something_to_watch() -> None:
    """prepare: connected and logged in before the folder list is known, so NOTIFY
    covers the folders one round trip after it, not a new connection later."""
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, attempts = make([client])
    watcher.prepare()
    assert attempts == [0]  # connecting already
    clock.advance(PREPARED_SECONDS / 2)
    assert client.sent == [] and not client.logged_out  # nothing to watch yet: it waits
    watcher.watch(set(), {"A", "B"})
    clock.advance(0)
    assert client.sent == [("NOTIFY", "A", "B", "+list")]
    assert attempts == [0]  # the same connection
    assert watcher.covered_since("A") == clock.seconds()
    # Watched now: it stays past the time a connection made ahead waits.
    clock.advance(PREPARED_SECONDS)
    assert not client.logged_out


def test_a_connection_made_ahead_and_never_needed_goes() -> None:
    client, later = FakeClient({"NOTIFY"}), FakeClient({"NOTIFY"})
    watcher, clock, _, attempts = make([client, later])
    watcher.prepare()
    clock.advance(PREPARED_SECONDS + 1)
    assert client.logged_out and client.sent == []
    watcher.prepare()  # a later session: connects again
    assert attempts == [0, 1] and not later.logged_out


def test_prepare_does_nothing_once_closed_or_while_watching() -> None:
    client = FakeClient({"NOTIFY"})
    watcher, clock, _, attempts = make([client])
    watcher.watch({"A"})
    watcher.prepare()
    assert attempts == [0]
    watcher.watch(set())  # nothing to watch: the connection goes at once
    clock.advance(1)
    assert client.logged_out
    closed, _, _, attempts2 = make([FakeClient({"NOTIFY"})])
    defer.ensureDeferred(closed.close())
    closed.prepare()
    assert attempts2 == []


def test_a_cover_on_its_way_is_waited_for_until_the_set_is_answered() -> None:
    """A STATUS asked while the watcher logs in waits for its NOTIFY SET, whose answer
    states the mailbox as the upstream has it after the client asked."""
    connecting: defer.Deferred[Any] = defer.Deferred()
    watcher, clock, _, _ = make([connecting])
    watcher.watch(set(), {"A", "B"})
    assert watcher.cover_coming("A") and watcher.cover_coming("B")
    assert not watcher.cover_coming("C")  # not watched: no cover is coming for it
    waited = defer.ensureDeferred(watcher.until_covered())
    clock.advance(COVER_WAIT_SECONDS / 2)
    assert not waited.called
    connecting.callback(FakeClient({"NOTIFY"}))
    assert waited.called  # with the SET's answer, not at the bound
    assert watcher.covered_since("A") is not None
    assert not watcher.cover_coming("A")
    done = defer.ensureDeferred(watcher.until_covered())
    assert done.called  # nothing on its way: no wait


def test_a_wait_for_a_cover_ends_at_the_bound_or_when_the_cover_will_not_come() -> None:
    stuck: defer.Deferred[Any] = defer.Deferred()
    watcher, clock, _, _ = make([stuck])
    watcher.watch(set(), {"A"})
    waited = defer.ensureDeferred(watcher.until_covered())
    clock.advance(COVER_WAIT_SECONDS - 0.01)
    assert not waited.called
    clock.advance(0.02)
    assert waited.called and watcher.covered_since("A") is None

    failing: defer.Deferred[Any] = defer.Deferred()
    watcher, clock, _, _ = make([failing, FakeClient({"NOTIFY"})])
    watcher.watch(set(), {"A"})
    waited = defer.ensureDeferred(watcher.until_covered())
    failing.callback(UpstreamUnreachable("refused"))
    assert waited.called
    assert not watcher.cover_coming("A")  # backing off: nothing is on its way

    polling: defer.Deferred[Any] = defer.Deferred()
    watcher, clock, _, _ = make([polling])
    watcher.watch({"A"})
    waited = defer.ensureDeferred(watcher.until_covered())
    polling.callback(FakeClient(set()))  # no NOTIFY: STATUS polls cover nothing
    assert waited.called and not watcher.cover_coming("A")
    watcher.watch(set())
