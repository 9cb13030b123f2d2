"""Values, sequence sets, fetch attributes, dates and modified UTF-7."""

from __future__ import annotations

import datetime

import pytest

from imapproxy.protocol import (
    Atom,
    Fetch,
    FetchAttribute,
    Login,
    ParseError,
    Raw,
    Section,
    SequenceSet,
    decode_mutf7,
    encode_mutf7,
    format_append_start,
    format_command,
    format_datetime,
    format_value_chunks,
    parse_date,
    parse_datetime,
    parse_fetch_attribute,
    parse_sequence_set,
    serialize_value,
)


def test_serialize_value() -> None:
    value = (None, 5, b'a"b\\c', Atom("\\Seen"), Raw(b"(X)"), (), b"line\r\n", b"")
    assert serialize_value(value) == b'(NIL 5 "a\\"b\\\\c" \\Seen (X) () {6}\r\nline\r\n "")'
    assert serialize_value(b"x" * 1025).startswith(b"{1025}\r\n")
    assert serialize_value(b"x" * 1024).startswith(b'"')
    assert serialize_value("\u00e4".encode()) == b"{2}\r\n\xc3\xa4"


def test_format_value_chunks_passes_big_literals_through() -> None:
    body = b"\x01" * 50000
    chunks = format_value_chunks((Atom("BODY[]"), body))
    assert any(c is body for c in chunks)
    assert b"".join(chunks) == serialize_value((Atom("BODY[]"), body))


@pytest.mark.parametrize(
    ("text", "largest", "members"),
    [
        ("1:3,7", 10, [1, 2, 3, 7]),
        ("3:1", 10, [1, 2, 3]),
        ("*", 5, [5]),
        ("*", 0, []),
        ("3:*", 2, [2, 3]),
        ("3:*", 0, []),
        ("8:9", 5, [8, 9]),
        ("2,2,1", 5, [1, 2]),
    ],
)
def test_resolve(text: str, largest: int, members: list[int]) -> None:
    assert parse_sequence_set(text).resolve(largest) == members


@pytest.mark.parametrize(
    "bad", ["", "0", "1:0", "a", "1,", ",1", "1::2", "1 2", "-1", "4294967296"]
)
def test_bad_sequence_sets(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_sequence_set(bad)


def test_sequence_set_forms() -> None:
    assert str(parse_sequence_set("1:*,5")) == "1:*,5"
    assert parse_sequence_set("$") == SequenceSet((), saved=True)
    assert str(SequenceSet.from_ints([7, 1, 2, 3, 3])) == "1:3,7"
    big = SequenceSet.from_ints(range(1, 100001))
    assert str(big) == "1:100000"
    assert len(parse_sequence_set("1:100000").resolve(100000)) == 100000
    assert 7 in parse_sequence_set("5:*") and 4 not in parse_sequence_set("5:*")


@pytest.mark.parametrize(
    ("text", "attr", "response_name"),
    [
        ("uid", FetchAttribute("UID"), "UID"),
        ("BODY", FetchAttribute("BODY"), "BODY"),
        ("BODY[]", FetchAttribute("BODY", Section()), "BODY[]"),
        (
            "BODY.PEEK[HEADER.FIELDS (Subject from)]<0.100>",
            FetchAttribute(
                "BODY", Section((), "HEADER.FIELDS", ("SUBJECT", "FROM")), (0, 100), True
            ),
            "BODY[HEADER.FIELDS (SUBJECT FROM)]<0>",
        ),
        (
            "BODY[1.2.HEADER.FIELDS.NOT (X-A)]",
            FetchAttribute("BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("X-A",))),
            "BODY[1.2.HEADER.FIELDS.NOT (X-A)]",
        ),
        ("BODY[1.TEXT]", FetchAttribute("BODY", Section((1,), "TEXT")), "BODY[1.TEXT]"),
        (
            "BINARY.PEEK[1]<5.10>",
            FetchAttribute("BINARY", Section((1,)), (5, 10), True),
            "BINARY[1]<5>",
        ),
        ("BINARY.SIZE[2]", FetchAttribute("BINARY.SIZE", Section((2,))), "BINARY.SIZE[2]"),
        ("RFC822.SIZE", FetchAttribute("RFC822.SIZE"), "RFC822.SIZE"),
    ],
)
def test_fetch_attributes(text: str, attr: FetchAttribute, response_name: str) -> None:
    assert parse_fetch_attribute(text) == attr
    assert attr.response_name() == response_name
    assert parse_fetch_attribute(attr.command_name()) == attr


@pytest.mark.parametrize(
    "bad",
    [
        "BODY[MIME]",
        "BODY[0]",
        "BINARY[TEXT]",
        "BODY[]<1>",
        "BODY[]<1.0>",
        "FOO",
        "BODY[HEADER.FIELDS ()]",
    ],
)
def test_bad_fetch_attributes(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_fetch_attribute(bad)


def test_dates() -> None:
    assert parse_date("1-Feb-1994") == datetime.date(1994, 2, 1)
    dt = parse_datetime(" 7-Jul-1996 02:44:25 -0700")
    assert dt == parse_datetime("07-Jul-1996 02:44:25 -0700")
    assert dt.utcoffset() == datetime.timedelta(hours=-7)
    assert format_datetime(dt) == " 7-Jul-1996 02:44:25 -0700"
    assert (
        format_datetime(parse_datetime("17-Jul-1996 02:44:25 +0530"))
        == "17-Jul-1996 02:44:25 +0530"
    )
    for bad in ("1-Foo-1994", "32-Jan-1994", "1994-01-01"):
        with pytest.raises(ParseError):
            parse_date(bad)
    with pytest.raises(ParseError):
        parse_datetime("17-Jul-1996 25:44:25 -0700")


def test_mutf7() -> None:
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_mutf7("A&B") == "A&-B"
    assert decode_mutf7("A&-B") == "A&B"
    for bad in ("&Jjo!", "&U,BTFw", "&AGE-", "\u00e4"):
        with pytest.raises(ParseError):
            decode_mutf7(bad)


def test_format_command_splits_at_sync_literals() -> None:
    cmd = Login("a1", "f\u00e4".encode(), b"pw")
    assert format_command(cmd, literal_plus=False) == [b"a1 LOGIN {3}\r\n", b'f\xc3\xa4 "pw"\r\n']
    assert format_command(cmd, literal_plus=True) == [b'a1 LOGIN {3+}\r\nf\xc3\xa4 "pw"\r\n']
    fetch = Fetch("a2", True, parse_sequence_set("1:*"), (FetchAttribute("UID"),))
    assert format_command(fetch, literal_plus=False) == [b"a2 UID FETCH 1:* (UID)\r\n"]


def test_format_append_start() -> None:
    when = datetime.datetime(
        1994, 2, 7, 21, 52, 25, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
    )
    assert (
        format_append_start("A3", "saved", ("\\Seen",), when, 310, literal_plus=False)
        == b'A3 APPEND "saved" (\\Seen) " 7-Feb-1994 21:52:25 -0800" {310}\r\n'
    )
    assert (
        format_append_start("A3", "INBOX", None, None, 5, literal_plus=True)
        == b'A3 APPEND "INBOX" {5+}\r\n'
    )
