"""THREAD trees (RFC 5256 §2.2-2.4, §4 examples) and their wire format."""

from __future__ import annotations

from imapproxy.message import threading as t


def _msg(
    n: int,
    date: int,
    subject: str = "",
    reply: bool = False,
    msgid: str | None = None,
    refs: tuple[str, ...] = (),
) -> t.Threadable:
    return t.Threadable(n, date, subject, reply, msgid or f"m{n}@x", refs)


def test_the_rfc_example_tree() -> None:
    # RFC 5256 §4: (2)(3 6 (4 23)(44 7 96)) -- later messages parents of earlier ones.
    messages = [
        _msg(2, 10, "A"),
        _msg(3, 20, "B"),
        _msg(4, 40, "B", True, refs=("m3@x", "m6@x")),
        _msg(6, 30, "B", True, refs=("m3@x",)),
        _msg(7, 60, "B", True, refs=("m3@x", "m6@x", "m44@x")),
        _msg(23, 50, "B", True, refs=("m3@x", "m6@x", "m4@x")),
        _msg(44, 45, "B", True, refs=("m3@x", "m6@x")),
        _msg(96, 70, "B", True, refs=("m3@x", "m6@x", "m44@x", "m7@x")),
    ]
    assert t.format_threads(t.references(messages)) == b"(2)(3 6 (4 23)(44 7 96))"


def test_siblings_under_a_missing_parent() -> None:
    # RFC 5256 §4: ((3)(5)) -- the parent does not match or does not exist.
    messages = [_msg(3, 1, "X", True, refs=("gone@x",)), _msg(5, 2, "X", True, refs=("gone@x",))]
    assert t.format_threads(t.references(messages)) == b"((3)(5))"


def test_a_single_child_of_a_missing_parent_becomes_a_root() -> None:
    assert t.format_threads(t.references([_msg(1, 1, "X", True, refs=("gone@x",))])) == b"(1)"


def test_in_reply_to_only_when_references_has_no_id() -> None:
    assert t.parent_chain(b"<a@x> <b@x>", b"<c@x>") == ("a@x", "b@x")
    assert t.parent_chain(b"garbage", b"<c@x> <d@x>") == ("c@x",)
    assert t.parent_chain(None, None) == ()
    assert t.message_ids(b"<a@x> <no-at> < b @ y >") == ["a@x", "b@y"]


def test_loops_are_not_made_and_duplicate_ids_stand_alone() -> None:
    loop = [_msg(1, 1, "A", refs=("m2@x",)), _msg(2, 2, "B", refs=("m1@x",))]
    assert t.format_threads(t.references(loop)) == b"(2 1)"
    duplicate = [_msg(1, 1, "A", msgid="same@x"), _msg(2, 2, "B", msgid="same@x")]
    duplicate.append(_msg(3, 3, "C", refs=("same@x",)))
    assert t.format_threads(t.references(duplicate)) == b"(1 3)(2)"


def test_subjects_gather_threads() -> None:
    # A reply goes under the original; two originals go under a new dummy.
    replies = [_msg(1, 1, "LUNCH"), _msg(2, 2, "LUNCH", True, refs=("elsewhere@x",))]
    assert t.format_threads(t.references(replies)) == b"(1 2)"
    twins = [_msg(1, 1, "LUNCH"), _msg(2, 2, "LUNCH")]
    assert t.format_threads(t.references(twins)) == b"((1)(2))"
    # Two dummies with one subject: their children become siblings.
    dummies = [
        _msg(1, 1, "LUNCH", True, refs=("g@x",)),
        _msg(2, 2, "LUNCH", True, refs=("g@x",)),
        _msg(3, 3, "LUNCH", True, refs=("h@x",)),
        _msg(4, 4, "LUNCH", True, refs=("h@x",)),
    ]
    assert t.format_threads(t.references(dummies)) == b"((1)(2)(3)(4))"
    # An empty subject gathers nothing.
    empty = [_msg(1, 1, ""), _msg(2, 2, "")]
    assert t.format_threads(t.references(empty)) == b"(1)(2)"


def test_orderedsubject() -> None:
    messages = [
        _msg(1, 30, "B"),
        _msg(2, 10, "A"),
        _msg(3, 20, "B", True),
        _msg(4, 5, "C"),
        _msg(5, 40, "A"),
        _msg(6, 15, "A"),
    ]
    # Threads by first date; first message the parent of every other one.
    assert t.format_threads(t.orderedsubject(messages)) == b"(4)(2 (6)(5))(3 1)"
    assert t.format_threads(t.orderedsubject([])) == b""
