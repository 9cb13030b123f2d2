"""Hypothesis round trips and robustness of both readers."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imapproxy.protocol import (
    NEED_DATA,
    Atom,
    Authenticate,
    Capability,
    Check,
    Close,
    CommandReader,
    ContinuationRequest,
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
    Login,
    Logout,
    Move,
    Namespace,
    Noop,
    ParseError,
    Rename,
    ResponseCode,
    ResponseReader,
    Search,
    SearchKey,
    Section,
    Select,
    SequenceSet,
    StartTLS,
    Status,
    Store,
    Subscribe,
    TaggedResponse,
    Unselect,
    Unsubscribe,
    UntaggedData,
    UntaggedStatus,
    decode_mutf7,
    encode_mutf7,
    format_command,
    format_response,
    parse_sequence_set,
)

from .helpers import read_commands, read_responses

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tags = st.from_regex(r"[A-Za-z0-9.][A-Za-z0-9.]{0,7}", fullmatch=True)
names = st.text(st.characters(codec="utf-8"), max_size=12)
strings = st.binary(max_size=24)
atoms = st.from_regex(r"\\?[A-Za-z$][A-Za-z0-9$_.-]{0,8}", fullmatch=True)
upper_atoms = st.from_regex(r"[A-Z][A-Z0-9-]{0,8}", fullmatch=True)
numbers = st.integers(0, 2**63)
nz = st.integers(1, 2**32 - 1)


def seqsets_of(n: Any) -> Any:
    b = st.one_of(st.none(), n)
    return st.builds(
        lambda r: SequenceSet(tuple(r)),
        st.lists(st.one_of(n.map(lambda x: (x, x)), st.tuples(b, b)), min_size=1, max_size=4),
    )


seqsets = seqsets_of(nz)
flags = st.lists(atoms, max_size=3).map(tuple)

# -- search keys ------------------------------------------------------------

dates = st.dates(datetime.date(1000, 1, 1), datetime.date(9999, 12, 31))
_leaf = st.one_of(
    st.sampled_from(
        [
            "ALL",
            "ANSWERED",
            "DELETED",
            "DRAFT",
            "FLAGGED",
            "NEW",
            "OLD",
            "RECENT",
            "SEEN",
            "UNSEEN",
            "UNDRAFT",
        ]
    ).map(SearchKey),
    st.builds(
        lambda n, d: SearchKey(n, (d,)), st.sampled_from(["BEFORE", "ON", "SINCE", "SENTON"]), dates
    ),
    st.builds(
        lambda n, v: SearchKey(n, (v,)), st.sampled_from(["LARGER", "SMALLER", "OLDER"]), numbers
    ),
    st.builds(lambda n, v: SearchKey(n, (v,)), st.sampled_from(["KEYWORD", "UNKEYWORD"]), atoms),
    st.builds(
        lambda n, v: SearchKey(n, (v,)), st.sampled_from(["FROM", "SUBJECT", "TEXT"]), strings
    ),
    st.builds(lambda a, b: SearchKey("HEADER", (a, b)), strings, strings),
    st.builds(lambda s: SearchKey("SEQ", (s,)), st.one_of(seqsets, st.just(SequenceSet((), True)))),
    st.builds(lambda s: SearchKey("UID", (s,)), seqsets),
    st.builds(lambda n: SearchKey("MODSEQ", (n,)), numbers),
    st.builds(
        lambda e, k, n: SearchKey("MODSEQ", (e, k, n)),
        strings,
        st.sampled_from(["priv", "shared", "all"]),
        numbers,
    ),
)
search_keys = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        inner.map(lambda k: SearchKey("NOT", (k,))),
        st.tuples(inner, inner).map(lambda ks: SearchKey("OR", ks)),
        st.lists(inner, min_size=1, max_size=3).map(lambda ks: SearchKey("AND", tuple(ks))),
    ),
    max_leaves=8,
)
criteria = st.lists(search_keys, min_size=1, max_size=4).map(lambda ks: SearchKey("AND", tuple(ks)))

# -- fetch attributes ---------------------------------------------------------

parts = st.lists(st.integers(1, 30), max_size=3).map(tuple)
fields = st.lists(
    st.from_regex(r"[A-Z][A-Z0-9-]{0,8}", fullmatch=True), min_size=1, max_size=3
).map(tuple)
partials = st.one_of(st.none(), st.tuples(st.integers(0, 2**31), st.integers(1, 2**31)))


@st.composite
def body_sections(draw: Any) -> Section:
    part = draw(parts)
    text = draw(
        st.sampled_from([None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"])
    )
    if text == "MIME" and not part:
        text = None
    return Section(part, text, draw(fields) if text and text.startswith("HEADER.FIELDS") else ())


fetch_attrs = st.one_of(
    st.sampled_from(
        [
            "UID",
            "FLAGS",
            "INTERNALDATE",
            "RFC822.SIZE",
            "ENVELOPE",
            "BODYSTRUCTURE",
            "BODY",
            "RFC822",
            "RFC822.HEADER",
            "MODSEQ",
            "EMAILID",
            "SAVEDATE",
        ]
    ).map(FetchAttribute),
    st.builds(
        lambda s, p, k: FetchAttribute("BODY", s, p, k), body_sections(), partials, st.booleans()
    ),
    st.builds(
        lambda s, p, k: FetchAttribute("BINARY", Section(s), p, k), parts, partials, st.booleans()
    ),
    st.builds(lambda s: FetchAttribute("BINARY.SIZE", Section(s)), parts),
)


@st.composite
def fetches(draw: Any) -> Fetch:
    uid = draw(st.booleans())
    changed = draw(st.one_of(st.none(), numbers))
    vanished = uid and changed is not None and draw(st.booleans())
    attrs = tuple(draw(st.lists(fetch_attrs, min_size=1, max_size=4)))
    return Fetch(draw(tags), uid, draw(seqsets), attrs, changed, vanished)


@st.composite
def selects(draw: Any) -> Select:
    qresync = None
    if draw(st.booleans()):
        known = draw(st.one_of(st.none(), seqsets))
        match = draw(st.one_of(st.none(), st.tuples(seqsets, seqsets)))
        qresync = (draw(nz), draw(numbers), known, match)
    return Select(draw(tags), draw(names), draw(st.booleans()), draw(st.booleans()), qresync)


return_opts = st.lists(
    st.one_of(
        upper_atoms, st.tuples(st.just("STATUS"), st.lists(upper_atoms, max_size=3).map(tuple))
    ),
    max_size=3,
).map(tuple)

commands = st.one_of(
    st.builds(
        lambda cls, t: cls(t),
        st.sampled_from(
            [Capability, Noop, Logout, StartTLS, Idle, Check, Close, Unselect, Namespace]
        ),
        tags,
    ),
    st.builds(Expunge, tags, st.one_of(st.none(), seqsets)),
    st.builds(Login, tags, strings, strings),
    st.builds(
        Authenticate,
        tags,
        upper_atoms,
        st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9+/]+=*|=", fullmatch=True).map(str.encode)),
    ),
    st.builds(
        Id,
        tags,
        st.one_of(
            st.none(),
            st.lists(st.tuples(strings, st.one_of(st.none(), strings)), max_size=3).map(tuple),
        ),
    ),
    st.builds(Enable, tags, st.lists(upper_atoms, min_size=1, max_size=3).map(tuple)),
    selects(),
    st.builds(Create, tags, names, flags),
    st.builds(Delete, tags, names),
    st.builds(Rename, tags, names, names),
    st.builds(Subscribe, tags, names),
    st.builds(Unsubscribe, tags, names),
    st.builds(
        lambda t, r, p, s, o, e: List(t, r, p, s, o, extended=e or bool(s or o) or len(p) > 1),
        tags,
        names,
        st.lists(names, min_size=1, max_size=3).map(tuple),
        st.lists(upper_atoms, max_size=3).map(tuple),
        return_opts,
        st.booleans(),
    ),
    st.builds(lambda t, r, p: List(t, r, (p,), lsub=True), tags, names, names),
    st.builds(Status, tags, names, st.lists(upper_atoms, min_size=1, max_size=4).map(tuple)),
    st.builds(
        Search,
        tags,
        st.booleans(),
        st.one_of(st.none(), st.just("UTF-8")),
        criteria,
        st.one_of(st.none(), st.lists(upper_atoms, max_size=3).map(tuple)),
    ),
    fetches(),
    st.builds(
        Store,
        tags,
        st.booleans(),
        seqsets,
        st.sampled_from(["", "+", "-"]),
        st.booleans(),
        flags,
        st.one_of(st.none(), numbers),
    ),
    st.builds(Copy, tags, st.booleans(), seqsets, names),
    st.builds(Move, tags, st.booleans(), seqsets, names),
)


@FAST
@given(commands, st.booleans(), st.sampled_from(["whole", "halves"]))
def test_command_round_trip(cmd: Any, literal_plus: bool, how: str) -> None:
    wire = format_command(cmd, literal_plus)
    if literal_plus:
        assert len(wire) == 1
    reader = CommandReader(max_literal=1 << 20)
    events = read_commands(b"".join(wire), how, reader)
    assert [e for e in events if not isinstance(e, ContinuationRequired)] == [cmd]
    assert sum(isinstance(e, ContinuationRequired) for e in events) == len(wire) - 1


# -- responses ----------------------------------------------------------------

resp_atoms = (
    st.from_regex(r"\\?[A-Za-z][A-Za-z0-9.\-]{0,8}", fullmatch=True)
    .filter(lambda a: a.upper() != "NIL")
    .map(Atom)
)
safe_strings = st.binary(max_size=20).filter(lambda b: all(32 <= c < 127 for c in b))


def values(string_strategy: Any) -> Any:
    return st.recursive(
        st.one_of(st.none(), numbers, string_strategy, resp_atoms),
        lambda inner: st.lists(inner, max_size=4).map(tuple),
        max_leaves=12,
    )


codes = st.one_of(
    st.none(),
    st.builds(ResponseCode, upper_atoms, st.lists(values(safe_strings), max_size=3).map(tuple)),
)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=20).filter(
    lambda t: not t.startswith("[")
)
data_names = upper_atoms.filter(lambda n: n not in {"OK", "NO", "BAD", "BYE", "PREAUTH", "FETCH"})

responses = st.one_of(
    st.builds(
        ContinuationRequest,
        st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b),
    ),
    st.builds(TaggedResponse, tags, st.sampled_from(["OK", "NO", "BAD"]), codes, texts),
    st.builds(UntaggedStatus, st.sampled_from(["OK", "NO", "BAD", "BYE", "PREAUTH"]), codes, texts),
    st.builds(
        UntaggedData,
        st.one_of(st.none(), st.integers(0, 2**32)),
        data_names,
        st.lists(values(strings), max_size=4).map(tuple),
    ),
    st.builds(
        lambda n, v: UntaggedData(n, "FETCH", (v,)),
        st.integers(1, 2**32),
        st.lists(values(strings), max_size=6).map(tuple),
    ),
)


@FAST
@given(
    st.lists(responses, min_size=1, max_size=3), st.sampled_from(["whole", "halves", "bytewise"])
)
def test_response_round_trip(resps: list[Any], how: str) -> None:
    wire = b"".join(b"".join(format_response(r)) for r in resps)
    assert read_responses(wire, how) == resps


# -- robustness ---------------------------------------------------------------

imapish = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from(
            [
                b"\r\n",
                b" ",
                b"{3}\r\n",
                b"{2+}\r\n",
                b"~{1}\r\n",
                b"(",
                b")",
                b'"',
                b"[",
                b"]",
                b"a1 ",
                b"* ",
                b"+ ",
                b"APPEND ",
                b"LOGIN ",
                b"FETCH 1 ",
                b"BODY[",
                b"SEARCH ",
                b"UID ",
                b"NIL",
                b"OK ",
                b"1:*",
                b"\\",
            ]
        ),
    ),
    max_size=30,
).map(b"".join)


@FAST
@given(imapish, st.lists(st.integers(1, 20), max_size=10), st.randoms(use_true_random=False))
def test_command_reader_never_raises(data: bytes, cuts: list[int], rnd: Any) -> None:
    reader = CommandReader(max_line=64, max_literal=8, max_append=16)
    pos = 0
    pieces = []
    for c in cuts:
        pieces.append(data[pos : pos + c])
        pos += c
    pieces.append(data[pos:])
    for piece in pieces:
        reader.receive_data(piece)
        for _ in range(1000):
            event = reader.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, ContinuationRequired):
                (reader.accept_literal if rnd.random() < 0.7 else reader.reject_literal)()
            if rnd.random() < 0.1:
                reader.expect_raw_line()
        else:
            raise AssertionError("reader did not stop")


@FAST
@given(imapish, st.sampled_from(["whole", "halves", "bytewise"]))
def test_response_reader_raises_only_parse_error(data: bytes, how: str) -> None:
    try:
        read_responses(data, how, ResponseReader(max_line=64, max_literal=8))
    except ParseError:
        pass


@FAST
@given(st.one_of(seqsets, seqsets_of(st.integers(1, 100))))
def test_sequence_set_round_trip(seqset: SequenceSet) -> None:
    parsed = parse_sequence_set(str(seqset))
    assert str(parsed) == str(seqset)
    if all((a or 0) <= 100 and (b or 0) <= 100 for a, b in seqset.ranges):
        assert parsed.resolve(50) == seqset.resolve(50)


@FAST
@given(st.lists(st.integers(1, 500), min_size=1))
def test_from_ints(numbers_: list[int]) -> None:
    assert SequenceSet.from_ints(numbers_).resolve(0) == sorted(set(numbers_))


@FAST
@given(st.text(st.characters(codec="utf-8")))
def test_mutf7_round_trip(name: str) -> None:
    encoded = encode_mutf7(name)
    assert encoded.isascii()
    assert decode_mutf7(encoded) == name
