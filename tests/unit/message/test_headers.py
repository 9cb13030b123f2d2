"""split_header and header_fields: the behaviour Dovecot 2.3 showed, pinned without it."""

from __future__ import annotations

import time

from imapproxy.message import header_fields, header_value, split_header
from tests.unit.message.corpus import HEADER_ONLY, LF_ONLY, PLAIN


def test_split_header_keeps_the_blank_line_with_the_header() -> None:
    header, body = split_header(PLAIN)
    assert header.endswith(b"Message-ID: <plain@example.org>\r\n\r\n")
    assert body == b"Hello Bob,\r\njust text.\r\n"
    assert header + body == PLAIN


def test_no_blank_line_makes_everything_header_and_adds_nothing() -> None:
    # Dovecot's BODY[HEADER] is then the whole message, with no CRLF appended.
    assert split_header(HEADER_ONLY) == (HEADER_ONLY, b"")
    assert split_header(b"Subject: x\r\nFrom: a@b") == (b"Subject: x\r\nFrom: a@b", b"")


def test_leading_blank_line_is_an_empty_header() -> None:
    assert split_header(b"\r\nbody\r\n") == (b"\r\n", b"body\r\n")


def test_bare_lf_is_tolerated() -> None:
    assert split_header(LF_ONLY) == (
        b"From: alice@example.org\nSubject: lf only\n\n",
        b"line one\nline two\n",
    )


def test_empty_message() -> None:
    assert split_header(b"") == (b"", b"")


def test_fields_keep_folds_and_order_case_insensitively() -> None:
    header, _ = split_header(PLAIN)
    assert header_fields(header, ("subject", "FROM"), negate=False) == (
        b"From: Alice <alice@example.org>\r\nSubject: plain\r\n folded subject continuation\r\n\r\n"
    )


def test_fields_not_drops_the_folded_field_whole() -> None:
    header, _ = split_header(PLAIN)
    assert header_fields(header, ("Subject",), negate=True) == (
        b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <plain@example.org>\r\n\r\n"
    )


def test_no_match_is_just_the_blank_line() -> None:
    header, _ = split_header(PLAIN)
    assert header_fields(header, ("X-Nothere",), negate=False) == b"\r\n"
    assert header_fields(b"", ("Subject",), negate=False) == b"\r\n"


def test_blank_line_added_when_header_has_none() -> None:
    assert header_fields(HEADER_ONLY, ("Subject",), negate=False) == (
        b"Subject: no body at all\r\n\r\n"
    )
    # An unterminated last line is terminated first.
    assert header_fields(b"Subject: x\r\nFrom: a@b", ("From",), negate=False) == (
        b"From: a@b\r\n\r\n"
    )


def test_names_match_dovecot_parsing() -> None:
    header = (
        b"Subject : spaced name\r\nNoColonLine\r\nsubject: second subject\r\n"
        b"X-Empty:\r\nFrom: a@b\r\n\r\n"
    )
    # Blanks before the colon are not part of the name; every occurrence is kept.
    assert header_fields(header, ("SUBJECT", "FROM"), negate=False) == (
        b"Subject : spaced name\r\nsubject: second subject\r\nFrom: a@b\r\n\r\n"
    )
    # A line without a colon is a field of its own that matches no real name.
    assert header_fields(header, ("SUBJECT",), negate=True) == (
        b"NoColonLine\r\nX-Empty:\r\nFrom: a@b\r\n\r\n"
    )


def test_lf_header_comes_out_crlf_like_dovecots_filter() -> None:
    header, _ = split_header(LF_ONLY)
    assert header_fields(header, ("Subject",), negate=True) == b"From: alice@example.org\r\n\r\n"


def test_a_field_folded_over_many_lines_costs_linear_time() -> None:
    # 400,000 continuation lines (3 MB) took ~15 s when each fold re-copied the field.
    folds = b" <x@y>\r\n" * 400_000
    header = b"From: a@b\r\nReferences: <a@b>\r\n" + folds + b"Subject: s\r\n\r\n"
    started = time.process_time()
    assert header_fields(header, ("SUBJECT", "FROM"), negate=False) == (
        b"From: a@b\r\nSubject: s\r\n\r\n"
    )
    kept = header_fields(header, ("REFERENCES",), negate=False)
    assert header_value(header + b"body", b"subject") == b"s"
    assert time.process_time() - started < 1.0
    assert kept == b"References: <a@b>\r\n" + folds + b"\r\n"


def test_field_names_follow_dovecots_rules() -> None:
    header = (
        b"Subject : spaced\r\n"  # blanks before the colon are not part of the name
        b" x: continuation of Subject\r\n"
        b"NoColon \r\n"  # no colon: the whole line is the name, blanks kept
        b"FROM:a\r\n"
        b"X-Empty:\r\n"
        b"\r\n"
        b"From: in the body\r\n"
    )
    assert header_fields(header, ("subject",), negate=False) == (
        b"Subject : spaced\r\n x: continuation of Subject\r\n\r\n"
    )
    assert header_fields(header, ("NOCOLON ",), negate=False) == b"NoColon \r\n\r\n"
    assert header_fields(header, ("NOCOLON",), negate=False) == b"\r\n"
    assert header_fields(header, ("from", "x"), negate=False) == b"FROM:a\r\n\r\n"
    assert header_fields(header, ("subject", "nocolon ", "x-empty"), negate=True) == (
        b"FROM:a\r\n\r\n"
    )
    assert header_value(header, b"from") == b"a"
    assert header_value(header, b"x-empty") is None
