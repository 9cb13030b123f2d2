"""ResponseReader and format_response: every response kind, big literals, RFC examples."""

from __future__ import annotations

import time

import pytest

from imapproxy.protocol import (
    NEED_DATA,
    Atom,
    ContinuationRequest,
    ParseError,
    Raw,
    ResponseCode,
    ResponseReader,
    TaggedResponse,
    UntaggedData,
    UntaggedStatus,
    fetch_items,
    format_response,
    parse_sequence_set,
    serialize_value,
)

from .helpers import SPLITS, read_responses

CASES: list[tuple[bytes, object]] = [
    (
        b"+ Ready for additional command text",
        ContinuationRequest(b"Ready for additional command text"),
    ),
    (b"+ ", ContinuationRequest(b"")),
    (b"+ YGgGCSqGSIb3EgECAgIBAAD/////", ContinuationRequest(b"YGgGCSqGSIb3EgECAgIBAAD/////")),
    (b"a1 OK LOGIN completed", TaggedResponse("a1", "OK", None, "LOGIN completed")),
    (
        b"a1 no [TRYCREATE] no such mailbox",
        TaggedResponse("a1", "NO", ResponseCode("TRYCREATE"), "no such mailbox"),
    ),
    (b"a1 BAD", TaggedResponse("a1", "BAD", None, "")),
    (
        b"A003 OK [APPENDUID 38505 3955] APPEND completed",
        TaggedResponse("A003", "OK", ResponseCode("APPENDUID", (38505, 3955)), "APPEND completed"),
    ),
    (
        b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done",
        TaggedResponse(
            "A004",
            "OK",
            ResponseCode("COPYUID", (38505, Atom("304,319:320"), Atom("3956:3958"))),
            "Done",
        ),
    ),
    (
        b"a1 OK [READ-WRITE] SELECT completed",
        TaggedResponse("a1", "OK", ResponseCode("READ-WRITE"), "SELECT completed"),
    ),
    (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid",
        UntaggedStatus("OK", ResponseCode("UIDVALIDITY", (3857529045,)), "UIDs valid"),
    ),
    (
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
        UntaggedStatus(
            "OK",
            ResponseCode("PERMANENTFLAGS", ((Atom("\\Deleted"), Atom("\\Seen"), Atom("\\*")),)),
            "Limited",
        ),
    ),
    (
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] Dovecot ready.",
        UntaggedStatus(
            "OK",
            ResponseCode("CAPABILITY", (Atom("IMAP4rev1"), Atom("LITERAL+"), Atom("SASL-IR"))),
            "Dovecot ready.",
        ),
    ),
    (b"* OK [HIGHESTMODSEQ 7] x", UntaggedStatus("OK", ResponseCode("HIGHESTMODSEQ", (7,)), "x")),
    (
        b"* OK [ALERT] System shutdown",
        UntaggedStatus("OK", ResponseCode("ALERT"), "System shutdown"),
    ),
    (b"* OK text with {5}", UntaggedStatus("OK", None, "text with {5}")),
    (
        b'* NO [WEIRD "unbalanced] odd',
        UntaggedStatus("NO", ResponseCode("WEIRD", (Raw(b'"unbalanced'),)), "odd"),
    ),
    (b"* OK [unclosed code", UntaggedStatus("OK", None, "[unclosed code")),
    (
        b"* BYE Autologout; idle for too long",
        UntaggedStatus("BYE", None, "Autologout; idle for too long"),
    ),
    (b"* PREAUTH ready", UntaggedStatus("PREAUTH", None, "ready")),
    (b"* 5 EXISTS", UntaggedData(5, "EXISTS", ())),
    (b"* 3 expunge", UntaggedData(3, "EXPUNGE", ())),
    (b"* 0 RECENT", UntaggedData(0, "RECENT", ())),
    (
        b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI",
        UntaggedData(
            None, "CAPABILITY", (Atom("IMAP4rev1"), Atom("STARTTLS"), Atom("AUTH=GSSAPI"))
        ),
    ),
    (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        UntaggedData(
            None,
            "FLAGS",
            (
                (
                    Atom("\\Answered"),
                    Atom("\\Flagged"),
                    Atom("\\Deleted"),
                    Atom("\\Seen"),
                    Atom("\\Draft"),
                ),
            ),
        ),
    ),
    (
        b'* LIST (\\HasNoChildren) "/" INBOX',
        UntaggedData(None, "LIST", ((Atom("\\HasNoChildren"),), b"/", Atom("INBOX"))),
    ),
    (
        b'* LIST (\\Noselect) NIL "foo bar"',
        UntaggedData(None, "LIST", ((Atom("\\Noselect"),), None, b"foo bar")),
    ),
    (
        b'* LIST () "/" {3}\r\nf\x00o',
        UntaggedData(None, "LIST", ((), b"/", b"f\x00o")),
    ),
    (
        b'* LIST (\\Subscribed) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))',
        UntaggedData(
            None, "LIST", ((Atom("\\Subscribed"),), b"/", b"Foo", (b"CHILDINFO", (b"SUBSCRIBED",)))
        ),
    ),
    (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)",
        UntaggedData(
            None, "STATUS", (Atom("blurdybloop"), (Atom("MESSAGES"), 231, Atom("UIDNEXT"), 44292))
        ),
    ),
    (b"* SEARCH 2 3 6", UntaggedData(None, "SEARCH", (2, 3, 6))),
    (b"* SEARCH", UntaggedData(None, "SEARCH", ())),
    (
        b'* ESEARCH (TAG "a1") UID COUNT 3 ALL 4:6',
        UntaggedData(
            None,
            "ESEARCH",
            ((Atom("TAG"), b"a1"), Atom("UID"), Atom("COUNT"), 3, Atom("ALL"), Atom("4:6")),
        ),
    ),
    (
        b"* VANISHED (EARLIER) 1:3",
        UntaggedData(None, "VANISHED", ((Atom("EARLIER"),), Atom("1:3"))),
    ),
    (b"* VANISHED 405", UntaggedData(None, "VANISHED", (405,))),
    (b"* ENABLED CONDSTORE", UntaggedData(None, "ENABLED", (Atom("CONDSTORE"),))),
    (b"* ENABLED", UntaggedData(None, "ENABLED", ())),
    (b'* ID ("name" "Dovecot")', UntaggedData(None, "ID", ((b"name", b"Dovecot"),))),
    (b"* ID NIL", UntaggedData(None, "ID", (None,))),
    (
        b'* NAMESPACE (("" "/")) NIL NIL',
        UntaggedData(None, "NAMESPACE", (((b"", b"/"),), None, None)),
    ),
    (
        b"* 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827)",
        UntaggedData(
            23, "FETCH", ((Atom("FLAGS"), (Atom("\\Seen"),), Atom("RFC822.SIZE"), 44827),)
        ),
    ),
    (
        b"* 1 FETCH (UID 7 MODSEQ (12) BINARY[1] ~{5}\r\nab\x00cd BODY[]<0> {5}\r\nhello)",
        UntaggedData(
            1,
            "FETCH",
            (
                (
                    Atom("UID"),
                    7,
                    Atom("MODSEQ"),
                    (12,),
                    Atom("BINARY[1]"),
                    b"ab\x00cd",
                    Atom("BODY[]<0>"),
                    b"hello",
                ),
            ),
        ),
    ),
    (b'* XUNKNOWN some (odd "text', UntaggedData(None, "XUNKNOWN", (Raw(b'some (odd "text'),))),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("wire", "expected"), CASES, ids=[c[0][:40].decode("latin-1") for c in CASES]
)
def test_response_parses(wire: bytes, expected: object, how: str) -> None:
    events = read_responses(wire + b"\r\nz OK done\r\n* 1 EXI", how)
    assert events == [expected, TaggedResponse("z", "OK", None, "done")]


@pytest.mark.parametrize(
    ("wire", "expected"), CASES, ids=[c[0][:40].decode("latin-1") for c in CASES]
)
def test_response_formats_back(wire: bytes, expected: object) -> None:
    assert read_responses(b"".join(format_response(expected))) == [expected]  # type: ignore[arg-type]


RFC3501_FETCH = (
    b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700"\r\n'.rstrip(b"\r\n")
    + b' RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"'
    b' "IMAP4rev1 WG mtg summary and minutes"'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
    b' ((NIL NIL "imap" "cac.washington.edu"))'
    b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")'
    b' ("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL'
    b' "<B27397-0100000@cac.washington.edu>")'
    b' BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028'
    b" 92))\r\n"
)

MULTIPART = (
    b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152'
    b' 23)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
    b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff"'
    b' "BASE64" 4554 73) "MIXED")'
)


def test_rfc3501_fetch_example() -> None:
    [resp] = read_responses(RFC3501_FETCH)
    assert isinstance(resp, UntaggedData) and resp.number == 12
    items = fetch_items(resp.values[0])  # type: ignore[arg-type]
    assert items["FLAGS"] == (Atom("\\Seen"),)
    assert items["INTERNALDATE"] == b"17-Jul-1996 02:44:25 -0700"
    assert items["RFC822.SIZE"] == 4286
    envelope = items["ENVELOPE"]
    assert isinstance(envelope, tuple) and len(envelope) == 10
    assert envelope[1] == b"IMAP4rev1 WG mtg summary and minutes"
    assert envelope[6] == (
        (None, None, b"minutes", b"CNRI.Reston.VA.US"),
        (b"John Klensin", None, b"KLENSIN", b"MIT.EDU"),
    )
    assert items["BODY"] == (
        b"TEXT",
        b"PLAIN",
        (b"CHARSET", b"US-ASCII"),
        None,
        None,
        b"7BIT",
        3028,
        92,
    )
    # The proxy caches ENVELOPE as serialized bytes and splices it back in.
    cached = serialize_value(envelope)
    again = UntaggedData(12, "FETCH", ((Atom("UID"), 5, Atom("ENVELOPE"), Raw(cached)),))
    [reparsed] = read_responses(b"".join(format_response(again)))
    assert fetch_items(reparsed.values[0])["ENVELOPE"] == envelope  # type: ignore[union-attr,arg-type]


def test_multipart_bodystructure_and_header_fields_literal() -> None:
    wire = (
        b"* 3 FETCH (UID 9 BODYSTRUCTURE "
        + MULTIPART
        + b" BODY[HEADER.FIELDS (SUBJECT FROM)] {21}\r\n"
        b"Subject: x\r\nFrom: y\r\n)\r\n"
    )
    [resp] = read_responses(wire)
    items = fetch_items(resp.values[0])  # type: ignore[union-attr,arg-type]
    assert items["BODY[HEADER.FIELDS (SUBJECT FROM)]"] == b"Subject: x\r\nFrom: y\r\n"
    body = items["BODYSTRUCTURE"]
    assert isinstance(body, tuple) and body[-1] == b"MIXED" and body[1][6] == 4554  # type: ignore[index]
    assert serialize_value(body) == MULTIPART.replace(b")(", b") (")


def test_copyuid_sets_parse() -> None:
    [resp] = read_responses(b"a OK [COPYUID 1 304,319:320 3956:3958] x\r\n")
    assert isinstance(resp, TaggedResponse) and resp.code is not None
    assert parse_sequence_set(str(resp.code.args[1])).resolve(0) == [304, 319, 320]


@pytest.mark.parametrize(
    "wire",
    [
        b"a1 FOO bar\r\n",
        b"a1\r\n",
        b"* 5 FETCH (UID 5\r\n",
        b"* FLAGS (\\Seen))\r\n",
        b"+ x {3}\r\nabc\r\n".replace(b"+ x", b"* 1 FETCH (X") + b"",
        b'* LIST () "/ INBOX\r\n',
        b"a OK {3}\r\nabc\r\n".replace(b"a OK", b"* 2 FETCH"),
    ],
)
def test_malformed_responses_raise(wire: bytes) -> None:
    with pytest.raises(ParseError):
        read_responses(wire)


def test_line_and_literal_limits() -> None:
    with pytest.raises(ParseError):
        read_responses(b"* SEARCH " + b"1 " * 100 + b"\r\n", reader=ResponseReader(max_line=50))
    with pytest.raises(ParseError):
        read_responses(b"* 1 FETCH (BODY[] {101}\r\n", reader=ResponseReader(max_literal=100))
    with pytest.raises(ParseError):
        read_responses(b"* 1 FETCH " + b"(" * 300 + b")" * 300 + b"\r\n")


def test_big_literal_in_chunks_is_fast() -> None:
    size = 30 * 2**20
    body = bytes(range(256)) * (size // 256)
    reader = ResponseReader()
    start = time.process_time()
    reader.receive_data(b"* 1 FETCH (UID 4 BODY[] {%d}\r\n" % size)
    assert reader.next_event() is NEED_DATA
    step = 64 * 1024
    for i in range(0, size, step):
        reader.receive_data(body[i : i + step])
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b")\r\n")
    resp = reader.next_event()
    elapsed = time.process_time() - start
    assert isinstance(resp, UntaggedData)
    assert fetch_items(resp.values[0])["BODY[]"] == body  # type: ignore[arg-type]
    assert elapsed < 1.0


def test_literal_split_across_line_boundary() -> None:
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (BODY[] {4}\r\nab")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"cd UID 3)\r\n* 2 EXISTS\r\n")
    assert reader.next_event() == UntaggedData(
        1, "FETCH", ((Atom("BODY[]"), b"abcd", Atom("UID"), 3),)
    )
    assert reader.next_event() == UntaggedData(2, "EXISTS", ())


def test_format_response_keeps_literal_uncopied() -> None:
    body = b"\x00" * 100000
    chunks = format_response(UntaggedData(1, "FETCH", ((Atom("BODY[]"), body),)))
    assert any(c is body for c in chunks)
    assert b"".join(chunks) == b"* 1 FETCH (BODY[] {100000}\r\n" + body + b")\r\n"


def test_fetch_items_rejects_odd_lists() -> None:
    with pytest.raises(ParseError):
        fetch_items((Atom("UID"),))
    with pytest.raises(ParseError):
        fetch_items((5, 5))
