"""When a just-synced replica counts as current (AccountRuntime._current_from): a NOTIFY SET
that came to cover the mailbox while its sync ran makes it current from the cover on,
but only if the sync's result matches the STATUS the SET stated, and no news came
since. Otherwise the sync's own start stands (and the next STATUS asks again)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imapproxy.account import AccountRuntime


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
