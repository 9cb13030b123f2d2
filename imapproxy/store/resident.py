"""Pages of the replica's memory map that transactions touched, handed back now and then.

LMDB reads through a memory map of ``data.mdb``. Every page a transaction touches
stays in the proxy's resident set until the kernel wants the memory back: after the
first sync and header FETCH of a 100,000-message INBOX that was the whole replica,
about 110 MB, counted in the proxy's RSS and its peak (VmHWM), though no object of
ours held any of it. So, at most once every ``INTERVAL`` seconds while transactions
run, the map's pages are released with ``madvise(MADV_DONTNEED)``. Our map is a
shared, read-only file mapping (no MDB_WRITEMAP: LMDB writes with pwrite), so this
only drops page-table entries: the data stays in the kernel's page cache, and the next
touch maps it back with a minor fault, no I/O. What is touched within one interval is
what stays resident.

Linux only (it finds the mapping in /proc/self/maps). Anywhere else, or if anything
fails, nothing is released; a larger resident set is the only cost. The mapping is
looked up once, and again only after LMDB maps the file anew (a resize, which the
environment counts): reading /proc/self/maps took 0.4-0.6 ms, on every release, in
the middle of whichever command's transaction came due.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: Seconds between releases: a header FETCH of a 100,000-message INBOX reads its
#: ENVELOPEs at about 25 MB a second, so what stays mapped is about a quarter of that.
#: (One madvise of the map costs well under a millisecond.)
INTERVAL = 0.25
MADV_DONTNEED = 4


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return madvise  # type: ignore[no-any-return]


_MADVISE = _madvise()


def regions(data_file: Path) -> list[tuple[int, int]]:
    """(start, end) of each mapping of data_file in this process."""
    inode = os.stat(data_file).st_ino
    found = []
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if (
                len(fields) == 6
                and fields[4] == str(inode)
                and fields[5].rstrip("\n").endswith(data_file.name)
            ):
                start, end = fields[0].split("-")
                found.append((int(start, 16), int(end, 16)))
    return found


class ResidentPages:
    """Releases the pages of one environment's map (see the module docstring)."""

    def __init__(
        self,
        data_file: Path,
        clock: Callable[[], float] = time.monotonic,
        generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.data_file = data_file
        self.clock = clock
        #: The map's generation (Environment.map_generation): regions are read again
        #: when it moves, never used for a map that may have moved.
        self.generation = generation
        self._last = clock()
        self._enabled = _MADVISE is not None
        self._regions: tuple[int, list[tuple[int, int]]] | None = None

    def tick(self) -> None:
        """After a transaction: release if the interval has passed."""
        if self._enabled and self.clock() - self._last >= INTERVAL:
            self.release()

    def release(self) -> None:
        self._last = self.clock()
        if _MADVISE is None:
            return
        try:
            for start, end in self._mapped():
                _MADVISE(start, end - start, MADV_DONTNEED)
        except Exception:  # never worth failing a command for: stop trying
            log.exception("could not release the replica's mapped pages; no longer trying")
            self._enabled = False

    def _mapped(self) -> list[tuple[int, int]]:
        generation = self.generation()
        if self._regions is None or self._regions[0] != generation:
            self._regions = (generation, regions(self.data_file))
        return self._regions[1]
