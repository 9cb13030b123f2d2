"""Progress of long work, as log lines: the first sync of a 100,000-message mailbox or
its metadata takes minutes, and an operator watching the journal should see it move.

A line at most every ``every`` seconds (the first after ``every`` seconds, so short
work logs nothing), and one at the end when any was logged. Work below ``LARGE`` items
is never reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Work of fewer items than this finishes too soon to need reporting.
LARGE = 5000
#: Seconds between two progress lines.
EVERY = 5.0


class Progress:
    def __init__(
        self,
        what: str,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = EVERY,
    ) -> None:
        self.what = what
        self.total = total
        self.clock = clock
        self.every = every
        self.done = 0
        self._started = clock()
        self._last = self._started
        self._told = False

    def advance(self, count: int) -> None:
        """count more items done; a line if one is due."""
        self.done += count
        now = self.clock()
        if self.total >= LARGE and now - self._last >= self.every:
            self._last, self._told = now, True
            log.info(
                "%s: %d of %d messages (%d%%)",
                self.what,
                self.done,
                self.total,
                100 * self.done // max(self.total, 1),
            )

    def finish(self) -> None:
        if self._told:
            log.info(
                "%s: %d messages in %.0f s", self.what, self.done, self.clock() - self._started
            )
