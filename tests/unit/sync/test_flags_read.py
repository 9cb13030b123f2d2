"""Upstream FLAGS as the replica keeps them, worked out once per distinct list."""

from __future__ import annotations

from imapproxy.protocol import Atom
from imapproxy.sync import mailboxes as sync_mailboxes


def test_recent_is_dropped_and_noted_whatever_its_case() -> None:
    flags = (Atom("\\Seen"), Atom("\\recent"), Atom("$Label1"))
    assert sync_mailboxes.flags_of(flags) == ("\\Seen", "$Label1")
    assert sync_mailboxes._recent_upstream({"FLAGS": flags})
    assert not sync_mailboxes._recent_upstream({"FLAGS": (Atom("\\Seen"),)})
    assert not sync_mailboxes._recent_upstream({})
    assert sync_mailboxes.flags_of(()) == ()


def test_the_same_list_is_read_once_and_reads_the_same() -> None:
    sync_mailboxes._read_flags_once.cache_clear()
    first = sync_mailboxes.flags_of((Atom("\\Seen"), Atom("\\Answered")))
    again = sync_mailboxes.flags_of((Atom("\\Seen"), Atom("\\Answered")))
    assert first == again == ("\\Seen", "\\Answered")
    info = sync_mailboxes._read_flags_once.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_a_list_that_cannot_be_a_cache_key_is_still_read() -> None:
    """No server sends one; if one did, it is read as before, not refused."""
    odd = (Atom("\\Seen"), [b"x"], Atom("\\Recent"))
    assert sync_mailboxes.flags_of(odd) == ("\\Seen", "[b'x']")  # type: ignore[arg-type]
    assert sync_mailboxes._recent_upstream({"FLAGS": odd})  # type: ignore[dict-item]
