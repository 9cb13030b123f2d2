"""Regressions from review: linear lexing, response limits, command caps, number atoms."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from imapproxy.protocol import (
    Atom,
    CommandError,
    CommandReader,
    ContinuationRequired,
    Noop,
    ParseError,
    ResponseReader,
    Search,
    Select,
    UntaggedData,
    fetch_items,
    format_response,
)

from .helpers import SPLITS, read_commands, read_responses


@contextmanager
def _timed(limit: float) -> Iterator[None]:
    """A guard against super-linear blow-ups (which take minutes), not a benchmark: CPU
    time of this process, so other work on a shared machine does not make it fail."""
    start = time.process_time()
    yield
    assert time.process_time() - start < limit


@contextmanager
def _shallow_stack(headroom: int) -> Iterator[None]:
    """Allow only ``headroom`` more Python frames than the caller has now."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# -- 1. "[" in atoms is linear ------------------------------------------------


def test_many_unclosed_brackets_in_command_atom_is_linear() -> None:
    with _timed(0.5):
        events = read_commands(b"a SELECT a" + b"[" * 64000 + b"\r\n")
    assert events == [Select("a", "a" + "[" * 64000)]


def test_many_atoms_with_unclosed_bracket_is_linear() -> None:
    with _timed(0.5):
        events = read_commands(b"a SELECT x" + b" x[" * 20000 + b"\r\nb NOOP\r\n")
    assert events == [CommandError("a", events[0].reason), Noop("b")]


def test_many_unclosed_brackets_in_response_is_linear() -> None:
    with _timed(0.5):
        (resp,) = read_responses(b"* 1 FETCH (X a" + b"[" * 200000 + b")\r\n")
    assert resp == UntaggedData(1, "FETCH", ((Atom("X"), Atom("a" + "[" * 200000)),))
    with _timed(0.5):
        (resp,) = read_responses(b"* 1 FETCH (X (" + b"x[ " * 30000 + b"))\r\n")
    assert resp.values == ((Atom("X"), (Atom("x["),) * 30000),)  # type: ignore[union-attr]


def test_brackets_still_group_after_an_unclosed_one() -> None:
    # An unclosed "[" does not stop a bracket in a later segment (after a literal).
    (resp,) = read_responses(b'* 1 FETCH (X a[ {1}\r\nx BODY[HEADER.FIELDS (A B)] "y")\r\n')
    assert resp.values == (  # type: ignore[union-attr]
        (Atom("X"), Atom("a["), b"x", Atom("BODY[HEADER.FIELDS (A B)]"), b"y"),
    )
    (resp,) = read_responses(b'* LIST () "/" [Gmail]/Sent\r\n')
    assert resp.values == ((), b"/", Atom("[Gmail]/Sent"))  # type: ignore[union-attr]


# -- 2. deep responses ----------------------------------------------------------


def _nested_bodystructure(levels: int) -> bytes:
    body = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 1 NIL NIL NIL NIL)'
    for i in range(levels):
        body = b"(" + body + b' "mixed" ("boundary" "b%d") NIL NIL NIL)' % i
    return body


def test_deeply_nested_bodystructure_parses() -> None:
    wire = b"* 1 FETCH (UID 1 BODYSTRUCTURE " + _nested_bodystructure(120) + b")\r\n"
    (resp,) = read_responses(wire)
    assert b"".join(format_response(resp)) == wire  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["whole", "halves"])
def test_250_deep_response_needs_no_recursion(how: str) -> None:
    wire = b"* 1 FETCH (X " + b"(a " * 249 + b"b" + b")" * 249 + b")\r\n"
    with _shallow_stack(60):
        (resp,) = read_responses(wire, how)
    value = fetch_items(resp.values[0])["X"]  # type: ignore[union-attr,arg-type]
    for _ in range(249):
        assert isinstance(value, tuple) and value[0] == Atom("a")
        value = value[1]
    assert value == Atom("b")


def test_response_depth_limit_is_256() -> None:
    assert ResponseReader().max_depth == 256
    read_responses(b"* 1 FETCH " + b"(" * 256 + b")" * 256 + b"\r\n")
    with pytest.raises(ParseError, match="nested too deeply"):
        read_responses(b"* 1 FETCH " + b"(" * 257 + b")" * 257 + b"\r\n")


# -- 3. long response lines -----------------------------------------------------


def test_search_with_150000_uids() -> None:
    assert ResponseReader().max_line == 64 << 20
    uids = list(range(1000000, 1150000))
    wire = b"* SEARCH " + b" ".join(b"%d" % u for u in uids) + b"\r\n"
    with _timed(0.5):
        (resp,) = read_responses(wire)
    assert resp == UntaggedData(None, "SEARCH", tuple(uids))


def test_long_response_line_in_small_chunks_is_linear() -> None:
    wire = b"* SEARCH" + b" 1234567" * 150000 + b"\r\n"
    reader = ResponseReader()
    with _timed(0.5):
        for i in range(0, len(wire), 1024):
            reader.receive_data(wire[i : i + 1024])
            event = reader.next_event()
    assert isinstance(event, UntaggedData) and len(event.values) == 150000


# -- 4. commands with many literals -----------------------------------------------


def test_1000_literals_parse_in_linear_time() -> None:
    wire = b"a SEARCH" + b" TEXT {1+}\r\nx" * 1000 + b"\r\n"
    with _timed(0.5):
        (event,) = read_commands(wire)
    assert isinstance(event, Search)


def test_too_many_literals_is_refused_and_skipped() -> None:
    wire = b"a SEARCH" + b" TEXT {1+}\r\nx" * 4000 + b"\r\nb NOOP\r\n"
    with _timed(0.5):
        events = read_commands(wire)
    assert events == [CommandError("a", "command too big", True), Noop("b")]


def test_sync_literal_over_count_cap_is_refused_before_it_is_sent() -> None:
    reader = CommandReader()
    reader.receive_data(b"a SEARCH")
    for _ in range(1000):
        reader.receive_data(b" TEXT {1}\r\n")
        assert reader.next_event() == ContinuationRequired("a", 1)
        reader.accept_literal()
        reader.receive_data(b"x")
    reader.receive_data(b" TEXT {1}\r\n")
    assert reader.next_event() == CommandError("a", "command too big", True)
    assert reader.awaiting_continuation is None
    reader.receive_data(b"b NOOP\r\n")
    assert reader.next_event() == Noop("b")


@pytest.mark.parametrize("how", SPLITS)
def test_literal_count_cap_stays_in_sync(how: str) -> None:
    reader = CommandReader(max_literals=3)
    wire = b"a SEARCH" + b" TEXT {2+}\r\nxy" * 5 + b" TEXT {1+}\r\nz\r\nb NOOP\r\n"
    assert read_commands(wire, how, reader) == [
        CommandError("a", "command too big", True),
        Noop("b"),
    ]
    # The counts start over with the next command.
    expected = read_commands(b"c SEARCH TEXT x TEXT y TEXT z\r\n")
    wire = b"c SEARCH TEXT {1+}\r\nx TEXT {1+}\r\ny TEXT {1+}\r\nz\r\n"
    assert read_commands(wire, how, reader) == expected


def test_sync_literal_over_command_cap_is_refused_before_it_is_sent() -> None:
    reader = CommandReader(max_command=100)
    reader.receive_data(b"a LOGIN {80}\r\n")
    assert reader.next_event() == ContinuationRequired("a", 80)
    reader.accept_literal()
    reader.receive_data(b"u" * 80 + b" {50}\r\n")
    assert reader.next_event() == CommandError("a", "command too big", True)
    assert reader.awaiting_continuation is None
    reader.receive_data(b"b NOOP\r\n")
    assert reader.next_event() == Noop("b")


@pytest.mark.parametrize("how", SPLITS)
def test_nonsync_literal_over_command_cap_is_skipped(how: str) -> None:
    reader = CommandReader(max_command=100)
    wire = b"a LOGIN {80+}\r\n" + b"u" * 80 + b" {50+}\r\n" + b"p" * 50 + b"\r\nb NOOP\r\n"
    assert read_commands(wire, how, reader) == [
        CommandError("a", "command too big", True),
        Noop("b"),
    ]


def test_final_line_over_command_cap() -> None:
    reader = CommandReader(max_command=100)
    wire = b"a LOGIN {60+}\r\n" + b"u" * 60 + b' "' + b"p" * 60 + b'"\r\nb NOOP\r\n'
    assert read_commands(wire, reader=reader) == [
        CommandError("a", "command too big", True),
        Noop("b"),
    ]


def test_append_message_does_not_count_toward_command_cap() -> None:
    reader = CommandReader(max_command=100)
    events = read_commands(b"a APPEND INBOX {1000+}\r\n" + b"m" * 1000 + b"\r\n", reader=reader)
    assert [type(e).__name__ for e in events] == ["AppendStart", "LiteralChunk", "AppendEnd"]
    assert events[1].data == b"m" * 1000


# -- 5. digit-only atoms with leading zeros ----------------------------------------


@pytest.mark.parametrize(
    ("wire", "values"),
    [
        (b'* LIST (\\HasNoChildren) "/" 007', ((Atom("\\HasNoChildren"),), b"/", Atom("007"))),
        (b"* 1 FETCH (FLAGS (\\Seen 0815))", ((Atom("FLAGS"), (Atom("\\Seen"), Atom("0815"))),)),
        (
            b"* STATUS 2024 (MESSAGES 0 UNSEEN 10)",
            (2024, (Atom("MESSAGES"), 0, Atom("UNSEEN"), 10)),
        ),
        (b"* FOO 00 0 01", (Atom("00"), 0, Atom("01"))),
    ],
)
def test_leading_zeros_keep_the_atom(wire: bytes, values: tuple[object, ...]) -> None:
    (resp,) = read_responses(wire + b"\r\n")
    assert resp.values == values  # type: ignore[union-attr]
    assert b"".join(format_response(resp)) == wire + b"\r\n"  # type: ignore[arg-type]
