"""FETCH items kept as the server's bytes: byte-equal where they can be passed on, and
read as values (as before) where they cannot."""

from __future__ import annotations

import pytest

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


def test_a_value_with_a_literal_or_8bit_data_is_read_as_values() -> None:
    head = b"* 1 FETCH (UID 3 ENVELOPE (NIL "
    items = _fetch(
        head + b"\x00" + b" NIL NIL NIL NIL NIL NIL NIL NIL NIL))", b"Gr\xc3\xbc\xc3\x9fe"
    )
    envelope = items["ENVELOPE"]
    assert isinstance(envelope, tuple) and envelope[1] == "Grüße".encode()
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
