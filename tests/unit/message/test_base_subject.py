"""Base subjects (RFC 5256 §2.1), the grammar's cases one by one, and the collation."""

from __future__ import annotations

import unicodedata

import pytest

from imapproxy.message.base_subject import base_subject, casemap, decode_words


@pytest.mark.parametrize(
    ("raw", "base", "reply"),
    [
        (b"Project kickoff", "PROJECT KICKOFF", False),
        # subj-refwd: "re" / "fw" / "fwd", blanks and a blob before the colon
        (b"Re: Project kickoff", "PROJECT KICKOFF", True),
        (b"RE: re: rE:  Project   kickoff", "PROJECT KICKOFF", True),
        (b"Fw: x", "X", True),
        (b"FWD: x", "X", True),
        (b"Re [list]: x", "X", True),
        (b"Re[2]: x", "X", True),
        # subj-blob before subj-refwd, and a blob left alone when nothing follows it
        (b"[list] Re: x", "X", True),
        (b"[list] x", "X", False),
        (b"[list]", "[LIST]", False),
        (b"[a][b] Re: [c] x", "X", True),
        # subj-trailer: "(fwd)" and blanks, repeatedly
        (b"x (fwd)", "X", True),
        (b"x (fwd) (FWD)  ", "X", True),
        (b"x   ", "X", False),
        # subj-fwd: "[fwd:" subject "]", then again from step 2
        (b"[Fwd: Re: x]", "X", True),
        (b"[fwd: [fwd: x (fwd)]]", "X", True),
        (b"[fwd: x", "[FWD: X", False),
        # not a leader: no colon, a word that only begins with re
        (b"Reply needed", "REPLY NEEDED", False),
        (b"Re x", "RE X", False),
        (b"Re: ", "", True),
        (b"", "", False),
        (None, "", False),
        # blanks: tabs and folds become one space
        (b"a\t\tb\r\n c", "A B C", False),
    ],
)
def test_base_subject(raw: bytes | None, base: str, reply: bool) -> None:
    assert base_subject(raw) == (base, reply)


def test_encoded_words_are_decoded_and_folded() -> None:
    assert base_subject(b"Re: =?UTF-8?B?w4ljb2xl?= du soir")[0] == casemap("École du soir")
    assert base_subject(b"=?ISO-8859-1?Q?=E9cole?= du   soir")[0] == casemap("école du soir")
    # Blanks between two encoded words go; blanks before plain text stay.
    assert decode_words(b"=?UTF-8?Q?a?= =?UTF-8?Q?b?= c") == "ab c"
    # An unknown charset leaves the word as it was.
    assert decode_words(b"=?x-nothing?Q?a?=") == "=?x-nothing?Q?a?="


def test_casemap_is_ascii_casemap_on_ascii_and_titlecase_beyond() -> None:
    assert casemap("Hello, World") == "HELLO, WORLD"
    assert casemap("é") == "E\u0301"  # titlecase, then decomposed
    assert casemap("ß") == "ß"  # no single-character titlecase: kept
    assert casemap("ǆ") == unicodedata.normalize("NFKD", "ǅ")  # titlecase, not upper
