"""ENVELOPE/BODYSTRUCTURE built locally: answers recorded from Dovecot 2.3.19 for the
same bytes (the integration test tests/integration/test_offline_structure.py compares
a larger set live)."""

from __future__ import annotations

from imapproxy.message import fetch_structure
from imapproxy.protocol import serialize_value
from imapproxy.sync.content import keep_local_structure

FOLDS = (
    b"From: a@b.c\r\nMIME-Version: 1.0\r\nSubject: \r\nDate:  d1 \r\n"
    b"Content-ID: x\r\n  y\r\nContent-Description: p \r\n\t q\r\n\r\nx\r\n"
)


def test_folds_and_blanks_as_dovecot_answers() -> None:
    assert serialize_value(fetch_structure.envelope(FOLDS)) == (
        b'("d1 " "" ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c"))'
        b" NIL NIL NIL NIL NIL)"
    )
    assert serialize_value(fetch_structure.bodystructure(FOLDS)) == (
        b'("text" "plain" ("charset" "us-ascii") "x  y" {5}\r\np \t q "7bit" 3 1 NIL NIL NIL NIL)'
    )


def test_subject_collapses_and_last_one_wins_addresses_filled_in() -> None:
    raw = (
        b"From: a@b.c\r\nSubject: first\r\nSubject: a \r\n \r\n b  \r\nTo: foo\r\n"
        b'Cc: "Q" <x@y>, Zed (comment) <z@y>, w@y (Wc), bare\r\n\r\nx'
    )
    assert serialize_value(fetch_structure.envelope(raw)) == (
        b'(NIL "a b" ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c"))'
        b' ((NIL NIL "foo" "MISSING_DOMAIN")) (("Q" NIL "x" "y") ("Zed" NIL "z" "y")'
        b' ("Wc" NIL "w" "y") (NIL NIL "bare" "MISSING_DOMAIN")) NIL NIL NIL)'
    )


def test_multipart_body_and_bodystructure() -> None:
    raw = (
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"
    )
    assert serialize_value(fetch_structure.bodystructure(raw)) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "b") NIL NIL NIL)'
    )
    assert serialize_value(fetch_structure.body(raw)) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")'
    )


class _BrokenTx:
    def put(self, *args: object) -> None:
        raise AssertionError("nothing may be cached when building fails")


def test_a_message_that_cannot_be_described_keeps_nothing(monkeypatch) -> None:
    def boom(raw: bytes) -> None:
        raise ValueError("hostile")

    monkeypatch.setattr(fetch_structure, "bodystructure", boom)
    assert keep_local_structure(_BrokenTx(), 1, 1, FOLDS) is False  # type: ignore[arg-type]
