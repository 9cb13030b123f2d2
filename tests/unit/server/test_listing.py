"""LIST/LSUB rules over the replica's tree: the cases the replica alone must get right."""

from __future__ import annotations

from imapproxy.server.listing import Folder, Row, join, list_rows, lsub_rows, matches, root


def _folders(*names: str, subscribed: tuple[str, ...] = ()) -> list[Folder]:
    return [Folder(n, "/", ("\\HasNoChildren",), n in subscribed) for n in names]


def test_a_level_without_its_own_mailbox_is_listed_noselect() -> None:
    # Created offline: the upstream never listed "new", only the replica knows "new/leaf".
    rows = list_rows(_folders("INBOX", "new/leaf"), ["%"], "/")
    assert Row(("\\Noselect", "\\HasChildren"), "/", "new") in rows
    assert {r.name for r in rows} == {"INBOX", "new"}


def test_child_info_comes_from_the_tree_not_the_stale_attributes() -> None:
    rows = list_rows(_folders("a", "a/b"), ["*"], "/")
    assert Row(("\\HasChildren",), "/", "a") in rows
    assert Row(("\\HasNoChildren",), "/", "a/b") in rows


def test_lsub_percent_stops_at_an_unsubscribed_level_as_noselect() -> None:
    folders = _folders("p", "p/c", "p/c/g", subscribed=("p/c/g",))
    assert lsub_rows(folders, ["p/%"]) == [Row(("\\Noselect",), "/", "p/c")]
    assert lsub_rows(folders, ["*"]) == [Row((), "/", "p/c/g")]


def test_inbox_matches_in_any_case_other_names_do_not() -> None:
    assert matches("INBOX", "inbox", "/")
    assert matches("INBOX", "InBoX*", "/")
    assert matches("INBOX/x", "inbox/%", "/")
    assert not matches("Archive", "ARCHIVE", "/")
    assert not matches("INBOXES", "inboxes", "/")


def test_reference_and_root() -> None:
    assert join("parent/", "%") == "parent/%"
    assert not matches("parent/child", join("parent/", "/%"), "/")
    assert root("parent/child/", "/") == "parent/"
    assert root("parent", "/") == ""
