"""LIST/LSUB rules over the replica's tree: the cases the replica alone must get right."""

from __future__ import annotations

from imapproxy.server.listing import (
    Folder,
    ListOptions,
    Row,
    check_options,
    extended_rows,
    join,
    list_rows,
    lsub_rows,
    matches,
    root,
)


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


# RFC 5258 (LIST-EXTENDED) ------------------------------------------------------------


def _ext(folders: list[Folder], pattern: str, select: str = "", returns: str = "") -> list[Row]:
    options = ListOptions(frozenset(select.split()), frozenset(returns.split()))
    return extended_rows(folders, [pattern], "/", options)


def _rfc_example_8(*subscribed: str) -> list[Folder]:
    names = ("INBOX", "Foo", "Foo/Bar", "Foo/Baz", "Moo")
    return [Folder(n, "/", (), n in subscribed) for n in names]


def test_rfc5258_example_8_children_and_childinfo() -> None:
    folders = _rfc_example_8("Foo/Baz")
    rows = _ext(folders, "%", returns="CHILDREN")
    assert Row(("\\HasChildren",), "/", "Foo") in rows
    assert Row(("\\HasNoChildren",), "/", "Moo") in rows
    assert _ext(folders, "*", "SUBSCRIBED") == [Row(("\\Subscribed",), "/", "Foo/Baz")]
    assert _ext(folders, "%", "SUBSCRIBED") == []
    assert _ext(folders, "%", "SUBSCRIBED RECURSIVEMATCH") == [Row((), "/", "Foo", ("SUBSCRIBED",))]
    # A1: Foo subscribed too.
    rows = _ext(_rfc_example_8("Foo", "Foo/Baz"), "%", "SUBSCRIBED RECURSIVEMATCH")
    assert rows == [Row(("\\Subscribed",), "/", "Foo", ("SUBSCRIBED",))]
    # B: nothing subscribed, nothing listed. C: only Foo and Moo subscribed.
    assert _ext(_rfc_example_8(), "%", "SUBSCRIBED RECURSIVEMATCH") == []
    rows = _ext(_rfc_example_8("Foo", "Moo"), "%", "SUBSCRIBED RECURSIVEMATCH", "CHILDREN")
    assert rows == [
        Row(("\\Subscribed", "\\HasChildren"), "/", "Foo"),
        Row(("\\Subscribed", "\\HasNoChildren"), "/", "Moo"),
    ]


def test_rfc5258_example_9_childinfo_whatever_the_pattern() -> None:
    names = [
        "INBOX", "foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
        "baz2/bar222", "eps2", "eps2/mamba", "qux2/bar2",
    ]  # fmt: skip
    subscribed = set(names) - {"INBOX", "foo2", "baz2"}
    folders = [Folder(n, "/", (), n in subscribed) for n in names]
    rows = {r.name: r for r in _ext(folders, "*2", "RECURSIVEMATCH SUBSCRIBED")}
    assert rows["foo2"] == Row((), "/", "foo2", ("SUBSCRIBED",))
    assert rows["eps2"] == Row(("\\Subscribed",), "/", "eps2", ("SUBSCRIBED",))
    assert rows["foo2/bar2"] == Row(("\\Subscribed",), "/", "foo2/bar2")
    assert "foo2/bar1" not in rows
    # Redundant CHILDINFO is suppressed (§3.5 SHOULD): all of baz2's children are listed,
    # and the level qux2 has its only child listed.
    assert "baz2" not in rows and "qux2" not in rows
    assert set(rows) == {
        "foo2", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2", "qux2/bar2",
    }  # fmt: skip


def test_a_level_is_nonexistent_in_extended_list() -> None:
    # RFC 5258 §3.4/§3.5: \NonExistent (implying \Noselect), with \HasChildren if asked.
    folders = [Folder("INBOX", "/", (), True), Folder("a/b", "/", (), True)]
    assert Row(("\\NonExistent",), "/", "a", exists=False) in _ext(folders, "%")
    rows = _ext(folders, "%", returns="CHILDREN")
    assert Row(("\\NonExistent", "\\HasChildren"), "/", "a", exists=False) in rows
    rows = _ext(folders, "%", "SUBSCRIBED RECURSIVEMATCH")
    assert Row(("\\NonExistent",), "/", "a", ("SUBSCRIBED",), exists=False) in rows
    # A \Noselect level the upstream listed counts as a level too.
    folders.append(Folder("a", "/", ("\\Noselect", "\\HasChildren"), False))
    assert Row(("\\NonExistent",), "/", "a", exists=False) in _ext(folders, "%")


def test_special_use_attributes_only_when_asked() -> None:
    folders = [
        Folder("INBOX", "/", ("\\HasNoChildren",), True),
        Folder("Sent", "/", ("\\HasNoChildren", "\\Sent"), True),
    ]
    assert _ext(folders, "*", "REMOTE") == [Row((), "/", "INBOX"), Row((), "/", "Sent")]
    assert _ext(folders, "*", returns="SPECIAL-USE")[1] == Row(("\\Sent",), "/", "Sent")
    assert _ext(folders, "*", "SPECIAL-USE") == [Row(("\\Sent",), "/", "Sent")]


def test_option_checks() -> None:
    def check(select: str, returns: str = "") -> str | None:
        return check_options(ListOptions(frozenset(select.split()), frozenset(returns.split())))

    assert check("SUBSCRIBED RECURSIVEMATCH") is None
    assert check("REMOTE SUBSCRIBED", "CHILDREN STATUS SPECIAL-USE SUBSCRIBED") is None
    assert check("RECURSIVEMATCH") is not None
    assert check("REMOTE RECURSIVEMATCH") is not None
    assert check("NOSUCH") is not None
    assert check("", "NOSUCH") is not None
