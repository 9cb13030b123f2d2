"""When a just-synced replica counts as current (AccountRuntime._current_from): a NOTIFY SET
that came to cover the mailbox while its sync ran makes it current from the cover on,
but only if the sync's result matches the STATUS the SET stated, and no news came
since. Otherwise the sync's own start stands (and the next STATUS asks again). And when
the folder list is fetched again once NOTIFY covers it (AccountRuntime._covered). And
that nothing is fresh while a body is held after an upstream expunge (AccountRuntime.fresh)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from imapproxy.account import LIST_REFRESH_DELAY, LIST_REFRESH_LATEST, AccountRuntime
from imapproxy.store import Store, accounts, held
from imapproxy.types import BlobId


@dataclass
class _Watcher:
    covered: float | None = None
    heard: float | None = None

    def covered_since(self, name: str) -> float | None:
        return self.covered

    def heard_at(self, name: str) -> float | None:
        return self.heard


@dataclass
class _Runtime:
    """What _current_from uses of an AccountRuntime."""

    watcher: _Watcher
    same: bool = True
    _cover_statuses: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"INBOX": {"UIDNEXT": 5}}
    )

    def _matches(self, mailbox: Any, status: dict[str, int] | None) -> bool:
        return self.same and status is not None


@dataclass(frozen=True)
class _Mailbox:
    name: str = "INBOX"


def _current_from(runtime: _Runtime, began: float) -> float:
    return AccountRuntime._current_from(runtime, _Mailbox(), began)  # type: ignore[arg-type]


def test_a_cover_during_the_sync_that_matches_makes_it_current_from_the_cover() -> None:
    assert _current_from(_Runtime(_Watcher(covered=12.0)), began=10.0) == 12.0


def test_a_cover_that_does_not_match_leaves_the_sync_start() -> None:
    assert _current_from(_Runtime(_Watcher(covered=12.0), same=False), began=10.0) == 10.0


def test_news_after_the_cover_leaves_the_sync_start() -> None:
    assert _current_from(_Runtime(_Watcher(covered=12.0, heard=12.5)), began=10.0) == 10.0


def test_no_cover_or_a_cover_before_the_sync_leaves_the_sync_start() -> None:
    assert _current_from(_Runtime(_Watcher(covered=None)), began=10.0) == 10.0
    assert _current_from(_Runtime(_Watcher(covered=9.0)), began=10.0) == 10.0


def test_a_cover_with_no_status_for_the_mailbox_leaves_the_sync_start() -> None:
    runtime = _Runtime(_Watcher(covered=12.0), _cover_statuses={})
    assert _current_from(runtime, began=10.0) == 10.0


class _ListWatcher:
    def list_covered_since(self) -> float | None:
        return 1.0


class _Outbox:
    def mailboxes_pending(self) -> set[int]:
        return set()


class _Link:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.busy_until = 0.0

    def quiet_for(self) -> float:
        return max(self.clock.seconds() - self.busy_until, 0.0)


class _CoverRuntime:
    """What _covered uses of an AccountRuntime, with a folder list that is not fresh."""

    def __init__(self) -> None:
        self.reactor = Clock()
        self.link = _Link(self.reactor)
        self.watcher = _ListWatcher()
        self.outbox = _Outbox()
        self._cover_statuses: dict[str, dict[str, int]] = {}
        self._list_refresh: Any = None
        self.refreshes = 0
        self.fresh_list = False

    def mailboxes(self) -> list[Any]:
        return []

    def list_fresh(self) -> bool:
        return self.fresh_list

    def _refresh_list_in_background(self) -> None:
        self.refreshes += 1

    def _refresh_list_later(self, covered_at: float) -> None:
        AccountRuntime._refresh_list_later(self, covered_at)  # type: ignore[arg-type]

    def _refresh_list_if_stale(self, covered_at: float) -> None:
        AccountRuntime._refresh_list_if_stale(self, covered_at)  # type: ignore[arg-type]


def _cover(runtime: _CoverRuntime) -> None:
    AccountRuntime._covered(runtime, frozenset(), {})  # type: ignore[arg-type]


def test_the_list_is_fetched_again_a_while_after_the_first_cover_not_at_once() -> None:
    """A new session's STATUS of each folder runs when NOTIFY first covers: a LIST then
    took the link from them for a round trip."""
    runtime = _CoverRuntime()
    _cover(runtime)
    _cover(runtime)  # a second SET meanwhile: still one refresh
    assert runtime.refreshes == 0
    runtime.reactor.advance(LIST_REFRESH_DELAY)
    assert runtime.refreshes == 1


def test_no_list_is_fetched_when_a_client_made_it_fresh_meanwhile() -> None:
    runtime = _CoverRuntime()
    _cover(runtime)
    runtime.fresh_list = True  # a client's LIST asked the upstream after the cover
    runtime.reactor.advance(LIST_REFRESH_DELAY)
    assert runtime.refreshes == 0


def test_the_list_refresh_waits_while_the_link_works_for_clients() -> None:
    """A short session reads bodies a second after the cover: the LIST waits until the
    link has had nothing to do for a while, and at most LIST_REFRESH_LATEST."""
    runtime = _CoverRuntime()
    _cover(runtime)
    runtime.link.busy_until = 5.0  # body reads, one after another
    for _ in range(5):
        runtime.reactor.advance(LIST_REFRESH_DELAY)  # up to 5.0: busy, later
    assert runtime.refreshes == 0
    runtime.reactor.advance(LIST_REFRESH_DELAY)  # quiet since 5.0 for a second: now
    assert runtime.refreshes == 1

    busy = _CoverRuntime()
    _cover(busy)
    busy.link.busy_until = 1000.0
    for _ in range(int(LIST_REFRESH_LATEST / LIST_REFRESH_DELAY) + 1):
        busy.reactor.advance(LIST_REFRESH_DELAY)
    assert busy.refreshes == 1  # never quiet: done anyway


@dataclass(frozen=True)
class _Replicated:
    name: str = "INBOX"
    id: int = 3
    contents_known: bool = True


class _MailboxCoverRuntime(_CoverRuntime):
    """_CoverRuntime with one replicated mailbox the cover's STATUS does not match."""

    def __init__(self) -> None:
        super().__init__()
        self.requested: list[tuple[str, bool]] = []
        self._synced_at: dict[int, float] = {}

    def mailboxes(self) -> list[Any]:
        return [_Replicated()]

    def fresh(self, mailbox: Any) -> bool:
        return False

    def _matches(self, mailbox: Any, status: dict[str, int] | None) -> bool:
        return False

    def request_sync(self, name: str, unless_fresh: bool = False) -> None:
        self.requested.append((name, unless_fresh))


def test_a_cover_that_finds_a_mailbox_behind_asks_for_a_sync_unless_fresh_by_then() -> None:
    """A first sync in batches is part stored when the cover comes: the sync it asks
    for runs after that first sync, which makes the mailbox fresh (from the cover on,
    see above); a second pass then cost a cold 10,000-message session 0.11 s."""
    runtime = _MailboxCoverRuntime()
    AccountRuntime._covered(runtime, frozenset({"INBOX"}), {})  # type: ignore[arg-type]
    assert runtime.requested == [("INBOX", True)]


# -- fresh: covered, synced since, no news, and nothing held ---------------------------


@dataclass
class _FreshRuntime:
    """What AccountRuntime.fresh uses."""

    watcher: _Watcher
    store: Store
    account: Any
    _synced_at: dict[int, float]


@dataclass(frozen=True)
class _Box:
    id: int
    name: str = "Archive"


def test_a_body_held_after_an_upstream_expunge_makes_no_folder_fresh(tmp_path: Path) -> None:
    """The held body's message may have moved to a folder whose news is on its way:
    until the background pass has looked, a SELECT there asks the upstream."""
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann"))
        runtime = _FreshRuntime(_Watcher(covered=1.0), store, account, {7: 2.0})
        box = _Box(7)
        fresh = AccountRuntime.fresh
        assert fresh(runtime, box)  # type: ignore[arg-type]
        store.write(lambda tx: held.hold(tx, account.id, BlobId(3)))
        assert not fresh(runtime, box)  # type: ignore[arg-type]
        store.write(lambda tx: held.forget(tx, account.id, BlobId(3)))
        assert fresh(runtime, box)  # type: ignore[arg-type]
    finally:
        store.close()
