"""Pages of the replica's map that reads touched leave the resident set, the data stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapproxy.store import Store, cache, resident
from imapproxy.store.cache import Kind
from imapproxy.store.resident import INTERVAL, ResidentPages
from imapproxy.types import AccountId, BlobId

COUNT = 4000
VALUE = b"(" + b"x" * 4000 + b")"  # 16 MB in all


def _mapped_kib(data_file: Path) -> int:
    """Resident KiB of this process's mappings of data_file (/proc/self/smaps)."""
    inode = str(data_file.stat().st_ino)
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = fields[4] == inode
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def _read_all(store: Store) -> bytes:
    def read(tx: object) -> bytes:
        last = b""
        for blob in range(1, COUNT + 1):
            data = cache.get(tx, AccountId(1), BlobId(blob), Kind.ENVELOPE)  # type: ignore[arg-type]
            assert data is not None
            last = data
        return last

    return store.read(read)


def test_released_pages_leave_the_resident_set_and_read_back_the_same(tmp_path: Path) -> None:
    now = [0.0]
    store = Store(tmp_path / "r")
    store.resident = ResidentPages(tmp_path / "r" / "data.mdb", clock=lambda: now[0])

    def fill(tx: object) -> None:
        for blob in range(1, COUNT + 1):
            cache.put(tx, AccountId(1), BlobId(blob), Kind.ENVELOPE, VALUE)  # type: ignore[arg-type]

    store.write(fill)
    data_file = tmp_path / "r" / "data.mdb"
    assert _read_all(store) == VALUE
    touched = _mapped_kib(data_file)
    assert touched > 12 * 1024  # the reads mapped the 16 MB in
    store.resident.release()
    assert _mapped_kib(data_file) < 1024
    assert _read_all(store) == VALUE  # mapped back from the page cache, unchanged
    store.close()


def test_a_release_is_due_once_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    resident = ResidentPages(tmp_path / "none", clock=lambda: now[0])
    released: list[float] = []
    resident.release = lambda: released.append(now[0])  # type: ignore[method-assign]
    resident.tick()
    now[0] = INTERVAL / 2
    resident.tick()
    assert released == []
    now[0] = INTERVAL
    resident.tick()
    assert released == [INTERVAL]


def test_the_mapping_is_looked_up_again_only_after_the_map_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/self/maps is read once, not on every release (0.4-0.6 ms each), and again
    once a resize has mapped the file anew: a release of the old range would miss the
    new map's pages, or hit whatever the process mapped there since."""
    store = Store(tmp_path / "r", map_size=1 << 20)
    data_file = tmp_path / "r" / "data.mdb"
    lookups: list[list[tuple[int, int]]] = []
    look_up = resident.regions

    def counted(path: Path) -> list[tuple[int, int]]:
        lookups.append(look_up(path))
        return lookups[-1]

    monkeypatch.setattr(resident, "regions", counted)
    store.resident.release()
    store.resident.release()
    assert len(lookups) == 1
    before = lookups[0]

    def fill(tx: object) -> None:
        for blob in range(1, COUNT + 1):
            cache.put(tx, AccountId(1), BlobId(blob), Kind.ENVELOPE, VALUE)  # type: ignore[arg-type]

    store.write(fill)  # 16 MB into a 1 MB map: it grows, mapped anew
    assert _read_all(store) == VALUE
    store.resident.release()
    assert len(lookups) == 2 and lookups[1] != before
    assert _mapped_kib(data_file) < 1024
    assert _read_all(store) == VALUE
    store.close()
