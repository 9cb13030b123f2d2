"""IMAP4rev2 next to IMAP4rev1 (RFC 9051 Appendix A, E): the command adapter and when
IMAP4rev2 is offered."""

from __future__ import annotations

from imapproxy import protocol as p
from imapproxy.server import rev2
from imapproxy.server.capabilities import BASE, capabilities


def test_utf8_names_from_a_rev2_client_reach_the_replica_as_modified_utf7() -> None:
    assert rev2.adapt(p.Select("a", "Café")) == p.Select("a", "Caf&AOk-")
    assert rev2.adapt(p.Rename("a", "A & B", "Straße")) == p.Rename("a", "A &- B", "Stra&AN8-e")
    listed = rev2.adapt(p.List("a", "Café/", ("*", "Ü%")))
    assert (listed.reference, listed.patterns) == ("Caf&AOk-/", ("*", "&ANw-%"))
    start = p.AppendStart("a", "Entwürfe", None, None, 3)
    assert rev2.adapt(start).mailbox == "Entw&APw-rfe"


def test_names_go_back_as_utf8_and_bad_modified_utf7_as_it_is() -> None:
    assert rev2.to_client("Caf&AOk-/Stra&AN8-e &- Co") == "Café/Straße & Co"
    assert rev2.to_client("odd&name") == "odd&name"


def test_a_rev2_search_without_return_is_esearch_all() -> None:
    search = p.Search("a", False, None, (), None)
    assert rev2.adapt(search).return_options == ()
    counted = p.Search("a", True, None, (), ("COUNT",))
    assert rev2.adapt(counted) == counted


def test_other_commands_pass_unchanged() -> None:
    noop = p.Noop("a")
    assert rev2.adapt(noop) is noop


def test_imap4rev2_is_offered_with_everything_it_folds_in_only() -> None:
    offered = capabilities(True, False, False)
    assert ("IMAP4rev2" in offered) == (set(BASE) >= rev2.FOLDED)
    # SEARCHRES (folded into IMAP4rev2) is the one extension not served on this branch.
    assert rev2.offered([*BASE, "SEARCHRES"])
    assert not rev2.offered([c for c in BASE if c != "ESEARCH"])
