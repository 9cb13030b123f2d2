"""Progress lines: none for short or small work, one at most per interval, a last one."""

from __future__ import annotations

import logging

import pytest

from imapproxy.sync.progress import LARGE, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "imapproxy.sync.progress"]


def test_long_work_logs_at_most_once_per_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    progress = Progress("first sync of 'INBOX'", 20_000, clock=clock, every=5.0)
    for _ in range(4):
        clock.now += 3.0
        progress.advance(5000)
    progress.finish()
    assert _lines(caplog) == [
        "first sync of 'INBOX': 10000 of 20000 messages (50%)",
        "first sync of 'INBOX': 20000 of 20000 messages (100%)",
        "first sync of 'INBOX': 20000 messages in 12 s",
    ]


@pytest.mark.parametrize(("total", "seconds"), [(LARGE - 1, 60.0), (LARGE * 10, 1.0)])
def test_small_or_quick_work_logs_nothing(
    caplog: pytest.LogCaptureFixture, total: int, seconds: float
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    progress = Progress("metadata of 'INBOX'", total, clock=clock, every=5.0)
    clock.now += seconds
    progress.advance(total)
    progress.finish()
    assert _lines(caplog) == []
