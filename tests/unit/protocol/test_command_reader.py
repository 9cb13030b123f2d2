"""CommandReader: every command kind, split every way, plus literals and limits."""

from __future__ import annotations

import datetime

import pytest

from imapproxy.protocol import (
    NEED_DATA,
    AppendEnd,
    AppendStart,
    Authenticate,
    Capability,
    Check,
    Close,
    CommandError,
    CommandReader,
    ContinuationRequired,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    Id,
    Idle,
    List,
    LiteralChunk,
    Login,
    Logout,
    Move,
    Namespace,
    Noop,
    RawLine,
    Rename,
    Search,
    SearchKey,
    Section,
    Select,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
    parse_sequence_set,
)

from .helpers import SPLITS, read_commands

S = parse_sequence_set
AND = lambda *keys: SearchKey("AND", keys)

CASES: list[tuple[bytes, object]] = [
    (b"a1 CAPABILITY", Capability("a1")),
    (b"a1 noop", Noop("a1")),
    (b"a1 LOGOUT", Logout("a1")),
    (b"a1 STARTTLS", StartTLS("a1")),
    (b"a1 IDLE", Idle("a1")),
    (b"a1 CHECK", Check("a1")),
    (b"a1 CLOSE", Close("a1")),
    (b"a1 UNSELECT", Unselect("a1")),
    (b"a1 NAMESPACE", Namespace("a1")),
    (b"a1 EXPUNGE", Expunge("a1")),
    (b"a1 UID EXPUNGE 3:5,7", Expunge("a1", S("3:5,7"))),
    (b"a1 LOGIN fred secret", Login("a1", b"fred", b"secret")),
    (b'a1 LOGIN "fred" "a \\"b\\" \\\\c"', Login("a1", b"fred", b'a "b" \\c')),
    (b"a1 LOGIN {4+}\r\nfred {2+}\r\npw", Login("a1", b"fred", b"pw")),
    (b"a1 AUTHENTICATE plain", Authenticate("a1", "PLAIN", None)),
    (b"a1 AUTHENTICATE PLAIN dGVzdA==", Authenticate("a1", "PLAIN", b"dGVzdA==")),
    (b"a1 AUTHENTICATE PLAIN =", Authenticate("a1", "PLAIN", b"=")),
    (b"a1 ID NIL", Id("a1", None)),
    (
        b'a1 ID ("name" "sodr" "version" NIL)',
        Id("a1", ((b"name", b"sodr"), (b"version", None))),
    ),
    (b"a1 ENABLE condstore QRESYNC", Enable("a1", ("CONDSTORE", "QRESYNC"))),
    (b"a1 SELECT INBOX", Select("a1", "INBOX", False)),
    (b'a1 EXAMINE "Sent Items"', Select("a1", "Sent Items", True)),
    (b"a1 SELECT INBOX (CONDSTORE)", Select("a1", "INBOX", False, condstore=True)),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        Select(
            "a1",
            "INBOX",
            False,
            qresync=(67890007, 20050715194045000, S("41,43:211,214:541"), None),
        ),
    ),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000 15000,22500,27000)))",
        Select(
            "a1",
            "INBOX",
            False,
            qresync=(
                67890007,
                90060115194045000,
                S("1:29997"),
                (S("5000,7500,9000"), S("15000,22500,27000")),
            ),
        ),
    ),
    (b"a1 SELECT INBOX (QRESYNC (1 2))", Select("a1", "INBOX", False, qresync=(1, 2, None, None))),
    (  # RFC 7162: seq-match-data without known-uids
        b"a1 SELECT INBOX (QRESYNC (67890007 90060115194045000 (1,5 100,200)))",
        Select(
            "a1", "INBOX", qresync=(67890007, 90060115194045000, None, (S("1,5"), S("100,200")))
        ),
    ),
    (b"a1 SELECT &AMQ-t&AOk-", Select("a1", "&AMQ-t&AOk-", False)),
    (b"a1 CREATE foo/bar", Create("a1", "foo/bar")),
    (b"a1 CREATE Drafts (USE (\\Drafts))", Create("a1", "Drafts", ("\\Drafts",))),
    (b"a1 DELETE foo", Delete("a1", "foo")),
    (b"a1 RENAME foo {3+}\r\nbar", Rename("a1", "foo", "bar")),
    (b"a1 SUBSCRIBE foo", Subscribe("a1", "foo")),
    (b"a1 UNSUBSCRIBE foo", Unsubscribe("a1", "foo")),
    (b'a1 LIST "" *', List("a1", "", ("*",))),
    (b'a1 LIST "~/Mail/" "%"', List("a1", "~/Mail/", ("%",))),
    (b'a1 LSUB "#news." "comp.mail.*"', List("a1", "#news.", ("comp.mail.*",), lsub=True)),
    (
        b'a1 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "foo/%") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))',
        List(
            "a1",
            "",
            ("INBOX", "foo/%"),
            ("SUBSCRIBED", "RECURSIVEMATCH"),
            ("CHILDREN", ("STATUS", ("MESSAGES", "UNSEEN"))),
            extended=True,
        ),
    ),
    (
        b'a1 LIST "" "*" RETURN (SPECIAL-USE)',
        List("a1", "", ("*",), (), ("SPECIAL-USE",), extended=True),
    ),
    # RFC 5258: an empty selection list or a list of one pattern is the extended syntax.
    (b'a1 LIST () "" "%"', List("a1", "", ("%",), extended=True)),
    (b'a1 LIST "" ("%")', List("a1", "", ("%",), extended=True)),
    (
        b"a1 STATUS blurdybloop (UIDNEXT messages)",
        Status("a1", "blurdybloop", ("UIDNEXT", "MESSAGES")),
    ),
    (
        b'a1 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        Search(
            "a1",
            False,
            None,
            AND(
                SearchKey("FLAGGED"),
                SearchKey("SINCE", (datetime.date(1994, 2, 1),)),
                SearchKey("NOT", (SearchKey("FROM", (b"Smith",)),)),
            ),
            None,
        ),
    ),
    (
        b"a1 UID SEARCH RETURN () CHARSET UTF-8 UID 1:* SUBJECT {4+}\r\n\xc3\xa4bc",
        Search(
            "a1",
            True,
            "UTF-8",
            AND(SearchKey("UID", (S("1:*"),)), SearchKey("SUBJECT", ("äbc".encode(),))),
            (),
        ),
    ),
    (
        b"a1 SEARCH RETURN (MIN MAX COUNT SAVE) OR (UNSEEN LARGER 5) $ HEADER X-A b KEYWORD $Junk",
        Search(
            "a1",
            False,
            None,
            AND(
                SearchKey(
                    "OR",
                    (
                        AND(SearchKey("UNSEEN"), SearchKey("LARGER", (5,))),
                        SearchKey("SEQ", (S("$"),)),
                    ),
                ),
                SearchKey("HEADER", (b"X-A", b"b")),
                SearchKey("KEYWORD", ("$Junk",)),
            ),
            ("MIN", "MAX", "COUNT", "SAVE"),
        ),
    ),
    (
        b'a1 SEARCH MODSEQ "/flags/\\\\draft" all 620162338 YOUNGER 300',
        Search(
            "a1",
            False,
            None,
            AND(
                SearchKey("MODSEQ", (b"/flags/\\draft", "all", 620162338)),
                SearchKey("YOUNGER", (300,)),
            ),
        ),
    ),
    (
        b'a1 SEARCH 2:4 MODSEQ 5 SENTBEFORE "3-Mar-2020"',
        Search(
            "a1",
            False,
            None,
            AND(
                SearchKey("SEQ", (S("2:4"),)),
                SearchKey("MODSEQ", (5,)),
                SearchKey("SENTBEFORE", (datetime.date(2020, 3, 3),)),
            ),
        ),
    ),
    (
        b"a1 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        Fetch(
            "a1",
            False,
            S("2:4"),
            (
                FetchAttribute("FLAGS"),
                FetchAttribute("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM"))),
            ),
        ),
    ),
    (
        b"a1 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        Fetch("a1", True, S("1:*"), (FetchAttribute("UID"), FetchAttribute("FLAGS")), 12345, True),
    ),
    (
        b"a1 FETCH 1 body.peek[1.2.mime]<0.2048>",
        Fetch(
            "a1", False, S("1"), (FetchAttribute("BODY", Section((1, 2), "MIME"), (0, 2048), True),)
        ),
    ),
    (
        b"a1 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BODY[] RFC822.SIZE)",
        Fetch(
            "a1",
            False,
            S("1"),
            (
                FetchAttribute("BINARY", Section((1,)), None, True),
                FetchAttribute("BINARY.SIZE", Section((1,))),
                FetchAttribute("BODY", Section()),
                FetchAttribute("RFC822.SIZE"),
            ),
        ),
    ),
    (
        b"a1 FETCH 1 FAST",
        Fetch(
            "a1",
            False,
            S("1"),
            tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
        ),
    ),
    (
        b"a1 FETCH 1 full",
        Fetch(
            "a1",
            False,
            S("1"),
            tuple(
                FetchAttribute(n)
                for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
            ),
        ),
    ),
    (b"a1 STORE 2:4 +FLAGS (\\Deleted)", Store("a1", False, S("2:4"), "+", False, ("\\Deleted",))),
    (
        b"a1 STORE 2 -flags.silent \\Seen $Fwd",
        Store("a1", False, S("2"), "-", True, ("\\Seen", "$Fwd")),
    ),
    (
        b"a1 UID STORE 5 (UNCHANGEDSINCE 320162338) FLAGS.SILENT ()",
        Store("a1", True, S("5"), "", True, (), 320162338),
    ),
    (b"a1 COPY 2:4 MEETING", Copy("a1", False, S("2:4"), "MEETING")),
    (b"a1 UID MOVE 42:69 foo", Move("a1", True, S("42:69"), "foo")),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("wire", "expected"), CASES, ids=[c[0][:40].decode("latin-1") for c in CASES]
)
def test_command_parses(wire: bytes, expected: object, how: str) -> None:
    events = read_commands(wire + b"\r\nz9 NOOP\r\nz10 NO", how)
    events = [e for e in events if not isinstance(e, ContinuationRequired)]
    assert events == [expected, Noop("z9")]


def test_trailing_bytes_stay_buffered() -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 NOOP\r\na2 LOG")
    assert reader.next_event() == Noop("a1")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"OUT\r\n")
    assert reader.next_event() == Logout("a2")


@pytest.mark.parametrize("how", SPLITS)
def test_synchronizing_literal(how: str) -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 LOGIN {4}\r\n")
    assert reader.next_event() == ContinuationRequired("a1", 4)
    assert reader.awaiting_continuation == ContinuationRequired("a1", 4)
    assert reader.next_event() is NEED_DATA
    reader.accept_literal()
    assert read_commands(b"fred {2}\r\npw\r\n", how, reader) == [
        ContinuationRequired("a1", 2),
        Login("a1", b"fred", b"pw"),
    ]


def test_rejected_literal_drops_command() -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 LOGIN {4}\r\n")
    assert reader.next_event() == ContinuationRequired("a1", 4)
    reader.reject_literal()
    assert read_commands(b"a2 NOOP\r\n", reader=reader) == [Noop("a2")]


def test_sync_literal_too_big() -> None:
    reader = CommandReader(max_literal=10)
    events = read_commands(b"a1 LOGIN {11}\r\na2 NOOP\r\n", reader=reader)
    assert events == [CommandError("a1", "literal too big", too_big=True), Noop("a2")]


@pytest.mark.parametrize("how", SPLITS)
def test_nonsync_literal_too_big_is_skipped(how: str) -> None:
    reader = CommandReader(max_literal=10)
    data = b"a1 LOGIN {12+}\r\n{not a cmd}! pw {3+}\r\nabc\r\na2 NOOP\r\n"
    assert read_commands(data, how, reader) == [
        CommandError("a1", "literal too big", too_big=True),
        Noop("a2"),
    ]


def test_sync_literal_on_unknown_command_fails_early() -> None:
    events = read_commands(b"a1 FROB {5}\r\nb NOOP\r\n")
    assert events == [CommandError("a1", "unknown command"), Noop("b")]


def test_binary_literal_only_in_append() -> None:
    events = read_commands(b"a1 LOGIN ~{3+}\r\nabc x\r\na2 NOOP\r\n")
    assert events == [CommandError("a1", "binary literal not allowed here"), Noop("a2")]


@pytest.mark.parametrize("how", SPLITS)
def test_idle_done_as_raw_line(how: str) -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 IDLE\r\n")
    assert reader.next_event() == Idle("a1")
    reader.expect_raw_line()
    assert read_commands(b"DONE\r\na2 NOOP\r\n", how, reader) == [RawLine(b"DONE"), Noop("a2")]


def test_authenticate_continuation_lines() -> None:
    reader = CommandReader()
    reader.receive_data(b"a1 AUTHENTICATE PLAIN\r\nAGZyZWQAc2VjcmV0\r\n")
    assert reader.next_event() == Authenticate("a1", "PLAIN", None)
    reader.expect_raw_line()
    assert reader.next_event() == RawLine(b"AGZyZWQAc2VjcmV0")


EIGHT_BIT = "8-bit characters are allowed only in a quoted string or a literal"
GARBAGE = [
    (b"a1 FROB x", CommandError("a1", "unknown command")),
    (b"a1", CommandError("a1", "missing command name")),
    (b"+a FOO", CommandError(None, "invalid tag")),
    (b"* NOOP", CommandError(None, "invalid tag")),
    (b'a1 LOGIN "unterminated', CommandError("a1", "invalid quoted string")),
    (b"a1 SELECT", CommandError("a1", "missing mailbox name")),
    (b"a1 NOOP extra", CommandError("a1", "unexpected extra arguments")),
    (b"a1 FETCH 0 FLAGS", CommandError("a1", "invalid sequence set")),
    (b"a1 FETCH 1 (FLAGS", CommandError("a1", "unterminated list")),
    (b"a1 FETCH 1 FLAGS)", CommandError("a1", "unexpected )")),
    (b"a1 FETCH 1 BODY[FOO]", CommandError("a1", "invalid section")),
    (b"a1 FETCH 1 X-FOO", CommandError("a1", "invalid fetch attribute")),
    (b"a1 SEARCH FOO", CommandError("a1", "unknown search key")),
    (b"a1 SEARCH", CommandError("a1", "missing search criteria")),
    (b"a1 SEARCH SINCE 31-Feb-2020", CommandError("a1", "invalid date")),
    (b"a1 UID LOGIN a b", CommandError("a1", "unknown command")),
    (b"a1 APPEND INBOX", CommandError("a1", "APPEND needs a message literal")),
    (b"a1 STORE 1 FLAGZ (\\Seen)", CommandError("a1", "invalid store item")),
    (b"a1 LOGIN \xff \xfe", CommandError("a1", EIGHT_BIT)),
    # RFC 9051: NUL is no CHAR; atoms are 7-bit (UTF-8 only in quoted strings).
    (b'a1 SEARCH SUBJECT "a\x00b"', CommandError("a1", "NUL is not allowed in a command")),
    (b"a1 SELECT a\x00b", CommandError("a1", "NUL is not allowed in a command")),
    (b"a1 SELECT Gr\xc3\xbc\xc3\x9fe", CommandError("a1", EIGHT_BIT)),
    (b'a1 SEARCH SUBJECT "a\rb"', CommandError("a1", "invalid quoted string")),
    (b"a1 FETCH 1 " + b"(" * 40 + b")" * 40, CommandError("a1", "lists nested too deeply")),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("wire", "error"), GARBAGE, ids=[g[0][:30].decode("latin-1") for g in GARBAGE]
)
def test_garbage_then_next_command(wire: bytes, error: CommandError, how: str) -> None:
    assert read_commands(wire + b"\r\nb1 NOOP\r\n", how) == [error, Noop("b1")]


def test_empty_lines_are_ignored() -> None:
    assert read_commands(b"\r\n\r\na NOOP\r\n") == [Noop("a")]


@pytest.mark.parametrize("how", ("whole", "halves"))
def test_line_too_long(how: str) -> None:
    reader = CommandReader(max_line=100)
    data = b"a1 LOGIN " + b"x" * 500 + b" y\r\na2 NOOP\r\n"
    # The refused line's tag is named, so the client can match the BAD to its command.
    assert read_commands(data, how, reader) == [CommandError("a1", "line too long"), Noop("a2")]


def test_line_too_long_without_a_tag_is_untagged() -> None:
    reader = CommandReader(max_line=100)
    data = b"x" * 500 + b"\r\na2 NOOP\r\n"
    assert read_commands(data, reader=reader) == [CommandError(None, "line too long"), Noop("a2")]


def test_line_too_long_is_not_buffered() -> None:
    reader = CommandReader(max_line=100)
    for _ in range(100):
        reader.receive_data(b"x" * 1000)
        while reader.next_event() is not NEED_DATA:
            pass
    assert len(reader._buf) < 2000
    reader.receive_data(b"\r\na NOOP\r\n")
    assert read_commands(b"", reader=reader) == [Noop("a")]


def test_line_too_long_after_literal_keeps_tag() -> None:
    reader = CommandReader(max_line=50)
    data = b"a1 LOGIN {1+}\r\nx " + b"y" * 80 + b"\r\na2 NOOP\r\n"
    assert read_commands(data, reader=reader) == [CommandError("a1", "line too long"), Noop("a2")]


# -- APPEND -----------------------------------------------------------------

DATE = datetime.datetime(
    1994, 2, 7, 21, 52, 25, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
)
MESSAGE = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: hi\r\n\r\nHello Joe\r\n"


@pytest.mark.parametrize("how", SPLITS)
def test_append_sync(how: str) -> None:
    data = b'A003 APPEND saved-messages (\\Seen) " 7-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(
        MESSAGE
    )
    data += MESSAGE + b"\r\nA004 NOOP\r\n"
    assert read_commands(data, how) == [
        ContinuationRequired("A003", len(MESSAGE)),
        AppendStart("A003", "saved-messages", ("\\Seen",), DATE, len(MESSAGE), False),
        LiteralChunk(MESSAGE),
        AppendEnd("A003"),
        Noop("A004"),
    ]


@pytest.mark.parametrize("how", SPLITS)
def test_append_nonsync_binary_and_literal_mailbox(how: str) -> None:
    data = b"a APPEND {5+}\r\nDra\x00t ~{5+}\r\nab\x00cd\r\nb NOOP\r\n"
    assert read_commands(data, how) == [
        AppendStart("a", "Dra\x00t", None, None, 5, True),
        LiteralChunk(b"ab\x00cd"),
        AppendEnd("a"),
        Noop("b"),
    ]


def test_append_streams_chunks_without_buffering() -> None:
    reader = CommandReader()
    reader.receive_data(b"a APPEND INBOX {300000+}\r\n")
    assert isinstance(reader.next_event(), AppendStart)
    chunk = b"x" * 1000
    for _ in range(300):
        reader.receive_data(chunk)
        event = reader.next_event()
        assert isinstance(event, LiteralChunk)
        assert event.data is chunk  # passed through, not copied
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b"\r\n")
    assert reader.next_event() == AppendEnd("a")


def test_append_too_big() -> None:
    reader = CommandReader(max_append=10)
    assert read_commands(b"a APPEND INBOX {11}\r\nb NOOP\r\n", reader=reader) == [
        CommandError("a", "message too big", too_big=True),
        Noop("b"),
    ]
    reader = CommandReader(max_append=10)
    assert read_commands(b"a APPEND INBOX {11+}\r\n01234567890\r\nb NOOP\r\n", reader=reader) == [
        CommandError("a", "message too big", too_big=True),
        Noop("b"),
    ]


def test_append_zero_length() -> None:
    assert read_commands(b"a APPEND INBOX {0+}\r\n\r\n") == [
        AppendStart("a", "INBOX", None, None, 0, False),
        AppendEnd("a"),
    ]


@pytest.mark.parametrize("how", SPLITS)
def test_multiappend_rfc3502_example(how: str) -> None:
    # RFC 3502 §6: two messages to saved-messages, each after its own continuation.
    second = b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\nSubject: afternoon\r\n\r\nHi\r\n"
    data = b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(MESSAGE) + MESSAGE
    data += b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(second) + second
    data += b"\r\nA004 NOOP\r\n"
    later = datetime.datetime(
        1994, 2, 7, 22, 43, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
    )
    assert read_commands(data, how) == [
        ContinuationRequired("A003", len(MESSAGE)),
        AppendStart("A003", "saved-messages", ("\\Seen",), None, len(MESSAGE), False),
        LiteralChunk(MESSAGE),
        ContinuationRequired("A003", len(second)),
        AppendStart("A003", "saved-messages", ("\\Seen",), later, len(second), False, True),
        LiteralChunk(second),
        AppendEnd("A003"),
        Noop("A004"),
    ]


def test_multiappend_without_options_and_binary() -> None:
    data = b"a APPEND INBOX {1+}\r\nx ~{2+}\r\ny\x00 {0+}\r\n\r\nb NOOP\r\n"
    assert read_commands(data) == [
        AppendStart("a", "INBOX", None, None, 1, False),
        LiteralChunk(b"x"),
        AppendStart("a", "INBOX", None, None, 2, True, True),
        LiteralChunk(b"y\x00"),
        AppendStart("a", "INBOX", None, None, 0, False, True),
        AppendEnd("a"),
        Noop("b"),
    ]


@pytest.mark.parametrize(
    "tail",
    [b"x {2+}", b" (\\Seen) junk {2+}", b' "bad date" {2+}', b" (\\Seen)", b" (\xff) {2+}"],
)
def test_multiappend_bad_tail_is_refused_and_its_literal_skipped(tail: bytes) -> None:
    data = b"a APPEND INBOX {1+}\r\nx" + tail + b"\r\n"
    data += b"yz\r\n" if tail.endswith(b"{2+}") else b""
    events = read_commands(data + b"b NOOP\r\n")
    assert events[:2] == [AppendStart("a", "INBOX", None, None, 1, False), LiteralChunk(b"x")]
    assert isinstance(events[2], CommandError) and events[2].tag == "a"
    assert events[3:] == [Noop("b")]


def test_multiappend_message_too_big_after_the_first() -> None:
    reader = CommandReader(max_append=5)
    data = b"a APPEND INBOX {1+}\r\nx {6+}\r\n012345\r\nb NOOP\r\n"
    assert read_commands(data, reader=reader)[2:] == [
        CommandError("a", "message too big", too_big=True),
        Noop("b"),
    ]


def test_append_bad_prefix() -> None:
    assert read_commands(b'a APPEND INBOX "not a date" {1+}\r\nx\r\nb NOOP\r\n') == [
        CommandError("a", "invalid date-time"),
        Noop("b"),
    ]


def test_literal_inside_list_and_search() -> None:
    data = b"a SEARCH CHARSET UTF-8 (OR SUBJECT {2}\r\n\xc3\xa4 TO {1}\r\nx)\r\n"
    events = [e for e in read_commands(data) if not isinstance(e, ContinuationRequired)]
    assert events == [
        Search(
            "a",
            False,
            "UTF-8",
            AND(
                AND(
                    SearchKey(
                        "OR", (SearchKey("SUBJECT", ("ä".encode(),)), SearchKey("TO", (b"x",)))
                    )
                )
            ),
        )
    ]


def test_login_repr_redacts_password() -> None:
    assert "secret" not in repr(Login("a", b"u", b"secret"))
    assert "c2VjcmV0" not in repr(Authenticate("a", "PLAIN", b"c2VjcmV0"))


def test_utf8_in_a_quoted_string_is_accepted() -> None:
    [command] = read_commands(b'a1 SELECT "Gr\xc3\xbc\xc3\x9fe"\r\n')
    assert not isinstance(command, CommandError)
