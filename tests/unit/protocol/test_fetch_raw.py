"""FETCH items kept as the server's bytes: byte-equal where they can be passed on, and
read as values (as before) where they cannot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapproxy.protocol import (
    RAW_FETCH_ITEMS,
    Atom,
    ParseError,
    Raw,
    ResponseReader,
    UntaggedData,
    fetch_items,
    parse_response,
    serialize_value,
)
from imapproxy.protocol._fetch_raw import (
    _list_end,
    _list_end_by_tokens,
    read_fetch_attributes,
    read_list_entry,
)
from imapproxy.protocol._lexer import Scanner

ENVELOPE = (
    b'("Mon, 7 Feb 1994 21:52:25 -0800" "a \\"quoted\\" (subject)" '
    b'(("Fred Foobar" NIL "foobar" "blurdybloop.example")) NIL NIL '
    b'((NIL NIL "imap" "cac.washington.edu")) NIL NIL NIL "<B27397-0100000@cac.washington.edu>")'
)
BODYSTRUCTURE = (
    b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@x>" '
    b'"Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "x") NIL NIL NIL)'
)


def _fetch(line: bytes, *literals: bytes) -> dict[str, object]:
    """Items of one FETCH response; NUL in line marks where each literal goes."""
    texts = line.split(b"\x00")
    parts = [texts[0]]
    for literal, text in zip(literals, texts[1:], strict=True):
        parts += [literal, text]
    response = parse_response(parts, raw_fetch_items=RAW_FETCH_ITEMS)
    assert isinstance(response, UntaggedData) and response.name == "FETCH"
    return fetch_items(response.values[0])  # type: ignore[arg-type]


def test_envelope_and_bodystructure_are_the_servers_bytes_and_mean_the_same() -> None:
    line = b"* 12 FETCH (UID 7 FLAGS (\\Seen) ENVELOPE " + ENVELOPE
    line += b" BODYSTRUCTURE " + BODYSTRUCTURE + b" BODY " + BODYSTRUCTURE + b")"
    items = _fetch(line)
    assert items["UID"] == 7 and items["FLAGS"] == (Atom("\\Seen"),)
    assert items["ENVELOPE"] == Raw(ENVELOPE)
    assert items["BODYSTRUCTURE"] == Raw(BODYSTRUCTURE)
    assert items["BODY"] == Raw(BODYSTRUCTURE)
    # The same meaning as the values the ordinary reader builds.
    plain = parse_response([line])
    assert isinstance(plain, UntaggedData)
    values = fetch_items(plain.values[0])  # type: ignore[arg-type]
    for name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        raw = items[name]
        assert isinstance(raw, Raw)
        again = parse_response([b"* 1 FETCH (X " + raw.data + b")"])
        assert isinstance(again, UntaggedData)
        assert fetch_items(again.values[0])["X"] == values[name]  # type: ignore[arg-type]


def test_other_items_and_sections_are_read_as_values() -> None:
    items = _fetch(b'* 1 FETCH (UID 3 BODY[HEADER.FIELDS (SUBJECT)] "Subject: x" RFC822.SIZE 10)')
    assert items["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: x"
    assert items["RFC822.SIZE"] == 10 and items["UID"] == 3


def test_a_literal_is_kept_raw_and_8bit_quoted_data_is_read_as_values() -> None:
    head = b"* 1 FETCH (UID 3 ENVELOPE (NIL "
    items = _fetch(
        head + b"\x00" + b" NIL NIL NIL NIL NIL NIL NIL NIL NIL))", b"Gr\xc3\xbc\xc3\x9fe"
    )
    # A literal is passed on as a literal: 8-bit data is valid there for any client.
    assert items["ENVELOPE"] == Raw(
        b"(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    )
    items = _fetch(b'* 1 FETCH (UID 3 ENVELOPE (NIL "Gr\xc3\xbc" NIL NIL NIL NIL NIL NIL NIL NIL))')
    assert isinstance(items["ENVELOPE"], tuple)
    # Our serializer then makes it valid for any client (a literal, not 8-bit quoted).
    assert b"{" in serialize_value(items["ENVELOPE"])


@pytest.mark.parametrize(
    "line",
    [
        b'* 1 FETCH (UID 3 ENVELOPE (NIL "unterminated))',
        b"* 1 FETCH (UID 3 ENVELOPE ((NIL)",
        b"* 1 FETCH (UID 3 ENVELOPE)",
        b"* 1 FETCH UID 3",
        b"* 1 FETCH (UID 3) trailing",
    ],
)
def test_malformed_fetch_responses_are_refused(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_response([line], raw_fetch_items=RAW_FETCH_ITEMS)


def test_nesting_beyond_the_limit_is_refused_not_passed_on() -> None:
    deep = b"(" * 300 + b")" * 300
    reader = ResponseReader(raw_fetch_items=RAW_FETCH_ITEMS)
    reader.receive_data(b"* 1 FETCH (UID 3 BODYSTRUCTURE " + deep + b")\r\n")
    with pytest.raises(ParseError):
        reader.next_event()


def test_the_reader_keeps_raw_items_only_when_asked() -> None:
    line = b"* 1 FETCH (UID 3 ENVELOPE " + ENVELOPE + b")\r\n"
    for raw, expected in ((RAW_FETCH_ITEMS, Raw), (frozenset(), tuple)):
        reader = ResponseReader(raw_fetch_items=raw)
        reader.receive_data(line)
        event = reader.next_event()
        assert isinstance(event, UntaggedData)
        assert isinstance(fetch_items(event.values[0])["ENVELOPE"], expected)  # type: ignore[arg-type]


# The shortcuts (one match per everyday item, one per balanced list) must read exactly
# what the general reader reads, and fall back to it wherever they are not sure.


def _general(parts: list[bytes]) -> dict[str, object]:
    response = parse_response(parts)
    assert isinstance(response, UntaggedData)
    return fetch_items(response.values[0])  # type: ignore[arg-type]


def _meaning(value: object) -> object:
    """A raw item's values, read back by the general reader."""
    if not isinstance(value, Raw):
        return value
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (X " + value.data + b")\r\n")
    event = reader.next_event()
    assert isinstance(event, UntaggedData)
    return fetch_items(event.values[0])["X"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line",
    [
        b'* 1 FETCH (UID 5 FLAGS (\\Seen $Label1 \\Answered) INTERNALDATE "01-Jan-2023 09:00:45'
        b' +0000" RFC822.SIZE 16834 MODSEQ (12))',
        b"* 1 FETCH (FLAGS (\\Seen 123 NIL nil) UID 5)",  # a number and NIL to the general one
        b"* 1 FETCH (UID 007 RFC822.SIZE 0)",  # "007" is an atom, not 7
        b"* 1 FETCH (UID 5 FLAGS ())",
        b"* 1 FETCH (UID 5 FLAGS (\\Seen  \\Deleted ))",
        b'* 1 FETCH (INTERNALDATE "a \\"quoted\\" date" UID 5)',
        b"* 1 FETCH (uid 5 flags (\\Seen))",  # lower case: the general reader's
        b"* 1 FETCH (UID 99999999999999999999999 X-GM-MSGID 1278455344230334865)",
        b"* 1 FETCH (MODSEQ (18446744073709551615) UID 2)",
        b"* 1 FETCH (UID 5 FLAGS (\\Seen [x]))",
        # The message list's head (UID FLAGS INTERNALDATE RFC822.SIZE), read in one match
        # where every part is what the single items take, else item by item.
        b'* 1 FETCH (UID 5 FLAGS (\\Seen) INTERNALDATE "01-Jan-2023 09:00:45 +0000" RFC822.SIZE 7'
        b" ENVELOPE NIL)",
        b'* 1 FETCH (UID 5 FLAGS () INTERNALDATE "" RFC822.SIZE 0)',
        b'* 1 FETCH (UID 5 FLAGS (\\Seen NIL) INTERNALDATE "d" RFC822.SIZE 7)',
        b'* 1 FETCH (UID 5 FLAGS (123) INTERNALDATE "d" RFC822.SIZE 7)',
        b'* 1 FETCH (UID 007 FLAGS () INTERNALDATE "d" RFC822.SIZE 7)',
        b'* 1 FETCH (UID 5 FLAGS () INTERNALDATE "d" RFC822.SIZE 07)',
        b'* 1 FETCH (UID 5 FLAGS () INTERNALDATE "d" RFC822.SIZE 7X)',
        b'* 1 FETCH (UID 5 FLAGS () INTERNALDATE "a \\"q\\" d" RFC822.SIZE 7)',
        b'* 1 FETCH (UID 5  FLAGS () INTERNALDATE "d" RFC822.SIZE 7)',
        b'* 1 FETCH (uid 5 FLAGS () INTERNALDATE "d" RFC822.SIZE 7)',
    ],
)
def test_everyday_items_read_as_the_general_reader_reads_them(line: bytes) -> None:
    assert _fetch(line) == _general([line])


def test_a_literal_inside_a_raw_item_is_kept_with_it() -> None:
    # Dovecot sends a file name in raw UTF-8 as a literal.
    name = "Übersicht.pdf".encode()
    head = b'* 3 FETCH (UID 9 BODYSTRUCTURE ("application" "pdf" ("name" '
    tail = b') NIL NIL "base64" 11150 NIL ("attachment" ("filename" '
    end = b")) NIL NIL) FLAGS (\\Seen))"
    parts = [head, name, tail, name, end]
    response = parse_response(parts, raw_fetch_items=RAW_FETCH_ITEMS)
    assert isinstance(response, UntaggedData)
    items = fetch_items(response.values[0])  # type: ignore[arg-type]
    raw = items["BODYSTRUCTURE"]
    assert isinstance(raw, Raw)
    assert raw.data.count(b"{%d}\r\n" % len(name) + name) == 2
    assert items["FLAGS"] == (Atom("\\Seen"),) and items["UID"] == 9
    assert _meaning(raw) == _general(parts)["BODYSTRUCTURE"]


def test_a_literal_with_nul_or_after_an_atom_is_read_as_values() -> None:
    for before, literal in ((b'("name" ', b"a\x00b"), (b'("name" x', b"abc")):
        parts = [b"* 3 FETCH (UID 9 BODYSTRUCTURE " + before, literal, b"))"]
        response = parse_response(parts, raw_fetch_items=RAW_FETCH_ITEMS)
        assert isinstance(response, UntaggedData)
        items = fetch_items(response.values[0])  # type: ignore[arg-type]
        assert isinstance(items["BODYSTRUCTURE"], tuple)


def test_nesting_deeper_than_the_one_pass_pattern_is_still_kept_raw() -> None:
    deep = b"(" * 40 + b'"x"' + b")" * 40
    items = _fetch(b"* 1 FETCH (BODYSTRUCTURE " + deep + b" UID 4)")
    assert items["BODYSTRUCTURE"] == Raw(deep) and items["UID"] == 4


_atoms = st.sampled_from(
    [b"NIL", b"nil", b"0", b"12", b"007", b"\\Seen", b"$Label1", b"x[y]", b"a.b", b"BASE64"]
)
_quoted = st.binary(max_size=12).map(
    lambda b: b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
)
_leaf = st.one_of(_atoms, _quoted, st.just(b"\x00LIT"))


def _lists(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(children, max_size=5).map(lambda xs: b"(" + b" ".join(xs) + b")")


_values = st.recursive(_leaf, _lists, max_leaves=25)
_item = st.one_of(
    st.tuples(st.sampled_from([b"UID", b"RFC822.SIZE", b"MODSEQ"]), _atoms),
    st.tuples(
        st.just(b"FLAGS"), st.lists(_atoms, max_size=4).map(lambda xs: b"(" + b" ".join(xs) + b")")
    ),
    st.tuples(st.just(b"INTERNALDATE"), _quoted),
    st.tuples(st.sampled_from([b"ENVELOPE", b"BODYSTRUCTURE", b"BODY"]), _lists(_values)),
)


@given(st.lists(_item, min_size=1, max_size=5), st.binary(min_size=1, max_size=8))
def test_any_fetch_response_means_the_same_read_either_way(
    items: list[tuple[bytes, bytes]], literal: bytes
) -> None:
    """Whatever the shortcuts take, kept raw or not, it means what the general reader
    reads; what neither can read is refused by both."""
    line = b"* 1 FETCH (" + b" ".join(name + b" " + value for name, value in items) + b")"
    _same_read_either_way(line, literal)


def _same_read_either_way(line: bytes, literal: bytes) -> None:
    """line (a literal where it holds NUL LIT) read with the shortcuts means what the
    general reader reads, or both refuse it."""
    texts = line.split(b"\x00LIT")
    parts = [texts[0]]
    for text in texts[1:]:
        parts += [literal, text]
    try:
        expected = _general(parts)
    except ParseError:
        with pytest.raises(ParseError):
            parse_response(parts, raw_fetch_items=RAW_FETCH_ITEMS)
        return
    response = parse_response(parts, raw_fetch_items=RAW_FETCH_ITEMS)
    assert isinstance(response, UntaggedData)
    got = fetch_items(response.values[0])  # type: ignore[arg-type]
    assert {k: _meaning(v) for k, v in got.items()} == expected


@given(_atoms, st.lists(_atoms, max_size=4), _quoted, _atoms, st.lists(_item, max_size=2))
def test_the_message_list_head_means_the_same_read_either_way(
    uid: bytes, flags: list[bytes], date: bytes, size: bytes, rest: list[tuple[bytes, bytes]]
) -> None:
    """The message list's first four items, read in one match where they can be: the
    same values as item by item, or the same refusal."""
    line = (
        b"* 1 FETCH (UID "
        + uid
        + b" FLAGS ("
        + b" ".join(flags)
        + b") INTERNALDATE "
        + date
        + b" RFC822.SIZE "
        + size
        + b"".join(b" " + n + b" " + v for n, v in rest)
        + b")"
    )
    _same_read_either_way(line, b"x")


def _item_by_item(line: bytes, pos: int) -> tuple[object, ...]:
    scanner = Scanner([line], numbers=True, max_depth=256, pos=pos)
    return read_fetch_attributes(scanner, RAW_FETCH_ITEMS)


_ENTRY = (
    b'* 2 FETCH (UID 2 FLAGS (\\Seen) INTERNALDATE "01-Jan-2023 11:27:14 +0000" RFC822.SIZE 6787'
    b" ENVELOPE " + ENVELOPE + b" BODYSTRUCTURE " + BODYSTRUCTURE + b")"
)


@pytest.mark.parametrize(
    ("line", "whole"),
    [
        (_ENTRY, True),
        (_ENTRY + b"  ", True),
        (_ENTRY.replace(b"FETCH (", b"FETCH   ("), True),
        (_ENTRY.replace(b"(\\Seen)", b"()"), True),
        (_ENTRY[:-1] + b" MODSEQ (5))", False),  # another item: item by item
        (_ENTRY.replace(b"UID 2", b"UID 007"), False),  # "007" is an atom
        (_ENTRY.replace(b"(\\Seen)", b"(\\Seen 12)"), False),  # a number to the reader
        (_ENTRY.replace(b"(\\Seen)", b"(NIL)"), False),  # nil to the reader
        (_ENTRY.replace(b'"Fred Foobar"', '"Frédéric"'.encode()), False),  # 8-bit data
        (_ENTRY.replace(b"RFC822.SIZE 6787 ", b"RFC822.SIZE 6787  "), False),
        (_ENTRY.replace(b'"7BIT" 1152', b"(" * 20 + b'"7BIT"' + b")" * 20 + b" 1152"), False),
        (_ENTRY.replace(b" BODYSTRUCTURE ", b" BODY "), False),
        (_ENTRY + b")", False),
    ],
)
def test_a_whole_message_list_entry_reads_in_one_match_as_item_by_item(
    line: bytes, whole: bool
) -> None:
    """A first sync's every response, read in one match where it is exactly the list
    head, ENVELOPE and BODYSTRUCTURE: the very values the item-by-item reader makes, or
    None where that reader must say what it means (or that it is wrong)."""
    pos = len(b"* 2 FETCH")
    entry = read_list_entry(line, pos, RAW_FETCH_ITEMS, 256)
    assert (entry is not None) is whole
    if entry is not None:
        assert entry == _item_by_item(line, pos)
    assert read_list_entry(line, pos, frozenset({"ENVELOPE"}), 256) is None
    assert read_list_entry(line, pos, RAW_FETCH_ITEMS, 11) is None
    _same_read_either_way(line, b"x")


@given(
    st.sampled_from([b"0", b"12", b"007", b"4294967295"]),
    st.lists(_atoms, max_size=4),
    _quoted,
    st.sampled_from([b"0", b"7", b"07", b"123456"]),
    _lists(_values),
    _lists(_values),
    st.sampled_from([b"", b" ", b"  "]),
)
def test_any_message_list_entry_reads_the_same_in_one_match(
    uid: bytes,
    flags: list[bytes],
    date: bytes,
    size: bytes,
    envelope: bytes,
    structure: bytes,
    tail: bytes,
) -> None:
    """Composed from the same atoms as the other property tests: where the one match
    takes an entry, its values are exactly the item-by-item reader's."""
    line = b"* 1 FETCH (UID " + uid + b" FLAGS (" + b" ".join(flags) + b") INTERNALDATE " + date
    line += b" RFC822.SIZE " + size + b" ENVELOPE " + envelope
    line += b" BODYSTRUCTURE " + structure + b")" + tail
    if b"\x00LIT" not in line:
        entry = read_list_entry(line, len(b"* 1 FETCH"), RAW_FETCH_ITEMS, 256)
        if entry is not None:
            assert entry == _item_by_item(line, len(b"* 1 FETCH"))
    _same_read_either_way(line, b"x")


@given(_lists(_values), st.binary(min_size=0, max_size=6), st.sampled_from([b")", b" X)", b""]))
def test_a_list_holding_literals_ends_where_a_token_at_a_time_finds_its_end(
    value: bytes, literal: bytes, after: bytes
) -> None:
    """A list with literals in it is measured a few parentheses at a time (_FLAT): it
    ends exactly where the token-by-token scan says, or is refused where that scan
    refuses it (8-bit data, a NUL in a literal, a literal after an atom)."""
    texts = (b"(BODYSTRUCTURE " + value + after).split(b"\x00LIT")
    parts = [texts[0]]
    for text in texts[1:]:
        parts += [literal, text]
    start = len(b"(BODYSTRUCTURE ")
    assert _list_end(parts, 0, start, 256) == _list_end_by_tokens(parts, 0, start, 256)
