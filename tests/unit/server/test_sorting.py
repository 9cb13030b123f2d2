"""SORT keys from header blocks and the order they give (RFC 5256 §3, RFC 5957)."""

from __future__ import annotations

from datetime import UTC, datetime

from imapproxy.server import sorting

ARRIVAL = datetime(2024, 1, 1, tzinfo=UTC)


def _facts(
    seq: int, header: str, size: int = 100, arrival: datetime = ARRIVAL
) -> sorting.SortFacts:
    return sorting.facts(seq, seq, arrival, size, header.encode() + b"\r\n")


def _order(messages: list[sorting.SortFacts], *program: tuple[str, bool]) -> list[int]:
    return [m.number for m in sorting.sort(messages, program)]


def test_the_rfc_example_subject_then_reverse_date() -> None:
    # RFC 5256 §3: SORT (SUBJECT REVERSE DATE) answers 5 3 4 1 2 for such a mailbox.
    messages = [
        _facts(1, "Subject: b\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000"),
        _facts(2, "Subject: Re: b\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000"),
        _facts(3, "Subject: a\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000"),
        _facts(4, "Subject: [x] b\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000"),
        _facts(5, "Subject: A\r\nDate: Mon, 1 Jan 2024 13:00:00 +0000"),
    ]
    assert _order(messages, ("SUBJECT", False), ("DATE", True)) == [5, 3, 4, 1, 2]


def test_address_keys() -> None:
    m = _facts(
        1,
        'From: "=?UTF-8?Q?J=C3=BCrgen?=" <jurgen@example.de>, b@x\r\n'
        "To: undisclosed-recipients:;\r\nCc: <Carol@Example.org>",
    )
    assert (m.from_, m.to, m.cc) == ("JURGEN", "UNDISCLOSED-RECIPIENTS", "CAROL")
    assert m.display_from == "JU\u0308RGEN"
    assert m.display_to == "UNDISCLOSED-RECIPIENTS"
    bare = _facts(2, "From: ann@example.org")
    assert (bare.display_from, bare.to, bare.display_to) == ("ANN@EXAMPLE.ORG", "", "")


def test_dates_zones_and_fallbacks() -> None:
    late = datetime(2030, 1, 1, tzinfo=UTC)
    zoned = _facts(1, "Date: Mon, 1 Jan 2024 10:00:00 +0200")
    utc = _facts(2, "Date: Mon, 1 Jan 2024 09:00:00 +0000")
    missing = _facts(3, "Subject: x", arrival=late)
    garbage = _facts(4, "Date: not a date", arrival=late)
    assert zoned.date < utc.date
    assert (missing.date, garbage.date) == (int(late.timestamp()), int(late.timestamp()))
    assert _order([missing, utc, zoned, garbage], ("DATE", False)) == [1, 2, 3, 4]


def test_reverse_flips_only_its_key_and_ties_go_to_the_sequence_number() -> None:
    messages = [
        _facts(n, f"Subject: {s}", size)
        for n, s, size in [(1, "b", 5), (2, "a", 5), (3, "b", 9), (4, "a", 9)]
    ]
    assert _order(messages, ("SIZE", True), ("SUBJECT", False)) == [4, 3, 2, 1]
    assert _order(messages, ("SIZE", False)) == [1, 2, 3, 4]
    assert _order(messages, ("SIZE", True)) == [3, 4, 1, 2]
