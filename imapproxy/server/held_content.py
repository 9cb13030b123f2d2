"""Content a session's FETCHes took from the upstream, kept in one write when it pauses.

A first read of a body is answered from memory (sync/content.py ``Fetched``); keeping
it is a write transaction and its disk sync, about a millisecond. Kept after each
answer, that millisecond fell on the client's next command: a client that downloads
bodies one command at a time sends the next as soon as it has read the last (traced
over 50 first reads: the next command waited for the keep, 1.1 ms of a read's
3.5 ms above direct at 50 ms round trip).

So what a session fetched is held until it pauses: no new content for HOLD_QUIET
(which a command waiting on the upstream is), HOLD_BYTES held, content older than
HOLD_LONGEST, before any command other than FETCH runs (Session.handle: another
command may read the cache, and a client that sends one has paused), or once the
session has closed (after LOGOUT's answer, not before it). Many reads are then kept
in one write transaction, where the client is not waiting for us. Until kept, the
session's own FETCHes read the held content first (``fetched``); a FETCH of metadata
lines, which reads the cache alone, keeps it first. Other sessions and the background
do not see it, and at worst fetch it again: it is a cache. A crash loses only content
the upstream can give again, never a change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from imapproxy.sync.content import Fetched

log = logging.getLogger(__name__)

#: Kept once the session has fetched nothing new for this long (seconds).
HOLD_QUIET = 0.005
#: ... or once this much is held (bytes): memory stays bounded for a FETCH of many
#: bodies, as it was by one fetched group before.
HOLD_BYTES = 8 << 20
#: ... or once the oldest content held is this old (seconds), however busy the session.
HOLD_LONGEST = 1.0


class HeldContent:
    """One session's fetched content not kept yet; ``on_kept`` runs after each keep that
    wrote something (the cache limit is enforced after what it adds)."""

    def __init__(self, reactor: Any, on_kept: Callable[[], None]) -> None:
        self.reactor = reactor
        self.on_kept = on_kept
        #: What the session's FETCH commands serve first and add to (sync/content.py).
        self.fetched = Fetched()
        self._first_held: float | None = None
        self._call: Any = None

    def answered(self) -> None:
        """A FETCH's answer has gone: keep now if enough is held, else once quiet."""
        if not self.fetched.pending:
            return
        now = self.reactor.seconds()
        if self._first_held is None:
            self._first_held = now
        if self.fetched.held_bytes >= HOLD_BYTES or now - self._first_held >= HOLD_LONGEST:
            self.keep()
            return
        if self._call is not None and self._call.active():
            self._call.reset(HOLD_QUIET)
        else:
            self._call = self.reactor.callLater(HOLD_QUIET, self.keep)

    def keep_if_full(self) -> None:
        """Within a FETCH of many bodies, while the upstream works on the next group."""
        if self.fetched.held_bytes >= HOLD_BYTES:
            self.keep()

    def keep(self) -> None:
        """Write what is held (never raises: a keep that fails costs a later fetch)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._first_held = None
        if not self.fetched.pending:
            return
        kept = self.fetched.keep()
        if kept:
            try:
                self.on_kept()
            except Exception:
                log.exception("after keeping fetched content")
