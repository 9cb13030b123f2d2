"""extract_section: section semantics as observed on Dovecot 2.3.19, pinned inline.

Every expected value here was first read from a live Dovecot (test_against_dovecot.py
repeats that comparison); these run without it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapproxy.message import extract_section, split_header
from tests.unit.message import corpus as c
from tests.unit.message.corpus import parse_section


def section(raw: bytes, spec: str) -> bytes | None:
    """``extract_section`` driven by an IMAP section string, for readable tests."""
    return extract_section(raw, *parse_section(spec))


# --------------------------------------------------------------------------- single part


def test_whole_message_header_and_text() -> None:
    assert section(c.PLAIN, "") == c.PLAIN
    header, body = split_header(c.PLAIN)
    assert section(c.PLAIN, "HEADER") == header
    assert section(c.PLAIN, "TEXT") == body == b"Hello Bob,\r\njust text.\r\n"


def test_part_one_of_a_single_part_message_is_its_body() -> None:
    assert section(c.PLAIN, "1") == b"Hello Bob,\r\njust text.\r\n"


def test_one_mime_of_a_single_part_message_is_the_message_header() -> None:
    assert section(c.PLAIN, "1.MIME") == split_header(c.PLAIN)[0]


@pytest.mark.parametrize("spec", ["2", "1.1", "1.HEADER", "1.TEXT", "2.MIME", "9"])
def test_missing_parts_of_a_single_part_message(spec: str) -> None:
    # None: Dovecot answers an empty string ("") for these, never NIL.
    assert section(c.PLAIN, spec) is None


def test_header_only_message() -> None:
    assert section(c.HEADER_ONLY, "HEADER") == c.HEADER_ONLY  # no CRLF added
    assert section(c.HEADER_ONLY, "TEXT") == b""
    assert section(c.HEADER_ONLY, "1") == b""
    assert section(c.HEADER_ONLY, "HEADER.FIELDS (SUBJECT FROM)") == (
        b"From: alice@example.org\r\nSubject: no body at all\r\n\r\n"
    )
    # .NOT filters the real header: no blank line there, none in the answer.
    assert section(c.HEADER_ONLY, "HEADER.FIELDS.NOT (SUBJECT)") == (
        b"From: alice@example.org\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    )


def test_unterminated_last_header_line() -> None:
    raw = c.EDGE["no_newline_at_all"]
    assert section(raw, "HEADER") == raw
    assert section(raw, "HEADER.FIELDS (SUBJECT FROM)") == b"Subject: x\r\nFrom: a@b\r\n\r\n"
    assert section(raw, "HEADER.FIELDS.NOT (SUBJECT)") == b"From: a@b"


def test_empty_message() -> None:
    assert section(b"", "") == b""
    assert section(b"", "HEADER.FIELDS (SUBJECT)") == b"\r\n"
    assert section(b"", "HEADER.FIELDS.NOT (SUBJECT)") == b""
    assert section(b"", "1") == b""


# --------------------------------------------------------------------------- multipart


def test_boundary_crlf_belongs_to_the_boundary() -> None:
    assert section(c.ALTERNATIVE, "1") == b"plain body"
    assert section(c.ALTERNATIVE, "2") == b"<p>html body</p>\r\n"
    assert section(c.ALTERNATIVE, "1.MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"


def test_n_dot_one_of_a_leaf_part_is_the_part_itself() -> None:
    assert section(c.ALTERNATIVE, "2.1") == b"<p>html body</p>\r\n"
    assert section(c.ALTERNATIVE, "2.1.MIME") == section(c.ALTERNATIVE, "2.MIME")
    assert section(c.ALTERNATIVE, "2.1.1") is None
    assert section(c.ALTERNATIVE, "2.2") is None


def test_header_and_text_need_a_message_rfc822_part() -> None:
    assert section(c.ALTERNATIVE, "1.HEADER") is None
    assert section(c.ALTERNATIVE, "1.TEXT") is None
    assert section(c.ALTERNATIVE, "3") is None


def test_preamble_and_epilogue_stay_in_the_multipart_body() -> None:
    text = section(c.MIXED_BASE64, "TEXT")
    assert text is not None
    assert text.startswith(b"This is the preamble, ignored by MIME readers.\r\n--==mixed")
    assert text.endswith(
        b"--==mixed boundary (odd) 42--\r\nThis is the epilogue.\r\nIt has two lines.\r\n"
    )
    assert section(c.MIXED_BASE64, "2") == b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert section(c.MIXED_BASE64, "2.MIME") == (
        b'Content-Type: application/octet-stream; name="blob.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n'
    )


def test_nested_multipart() -> None:
    assert section(c.NESTED, "1") == (
        b"inner preamble\r\n--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n"
        b"--inner\r\nContent-Type: text/html\r\n\r\n<b>inner html</b>\r\n--inner--\r\n"
        b"inner epilogue\r\n"
    )
    assert (
        section(c.NESTED, "1.MIME")
        == b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
    )
    assert section(c.NESTED, "1.1") == b"inner plain"
    assert section(c.NESTED, "1.2") == b"<b>inner html</b>"
    assert section(c.NESTED, "1.1.1") == b"inner plain"
    assert section(c.NESTED, "2") == b"iVBORw0KGgo="


def test_message_rfc822_part() -> None:
    raw = c.RFC822_ATTACHED
    assert section(raw, "2.MIME") == (
        b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
    )
    assert section(raw, "2.HEADER") == (
        b"From: carol@example.org\r\nSubject: inner message\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="in-alt"\r\n\r\n'
    )
    assert section(raw, "2.HEADER.FIELDS (SUBJECT)") == b"Subject: inner message\r\n\r\n"
    assert section(raw, "2.TEXT") == (
        b"--in-alt\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--in-alt\r\n"
        b"Content-Type: text/html\r\n\r\n<i>inner html</i>\r\n--in-alt--\r\n"
    )
    assert section(raw, "2") == section(raw, "2.HEADER") + section(raw, "2.TEXT")  # type: ignore[operator]
    assert section(raw, "2.1") == b"inner text"
    assert section(raw, "2.1.MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert section(raw, "2.2") == b"<i>inner html</i>"


def test_single_part_message_rfc822_and_odd_content_type() -> None:
    raw = c.PARAMS_ANY_ORDER  # folded, upper-case, quoted boundary with specials
    assert section(raw, "1") == b"first"
    assert section(raw, "2") == b"Subject: encapsulated plain\r\n\r\nencapsulated body"
    assert section(raw, "2.1") == b"encapsulated body"
    # 2.1 is the encapsulated message itself, so its MIME header is the message header.
    assert section(raw, "2.1.MIME") == b"Subject: encapsulated plain\r\n\r\n"


def test_missing_close_delimiter_runs_to_end_of_data() -> None:
    raw = c.NO_CLOSE_DELIMITER
    assert section(raw, "1") == b"one"
    assert section(raw, "2") == b"no headers in this part\r\n"
    assert section(raw, "2.MIME") == b"\r\n"


def test_top_level_message_rfc822() -> None:
    raw = c.EDGE["toplevel_rfc822"]
    assert section(raw, "1.MIME") == split_header(raw)[0]
    assert section(raw, "1.HEADER") == (
        b"Subject: wrapped\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n"
    )
    assert section(raw, "1.1") == b"wrapped one"


# --------------------------------------------------------------------------- Dovecot quirks


def test_unquoted_boundary_stops_at_equals_but_prefix_match_still_works() -> None:
    raw = c.EDGE["unquoted_boundary_with_equals"]  # boundary=----=_Part_1 parses as "----"
    assert section(raw, "1") == b"one"
    assert section(raw, "2") == b"two"


@pytest.mark.parametrize("name", ["boundary_never_used", "multipart_without_boundary"])
def test_multipart_without_usable_boundary_has_no_parts(name: str) -> None:
    assert section(c.EDGE[name], "1") is None


def test_malformed_content_type_is_not_multipart() -> None:
    raw = c.EDGE["malformed_content_type"]  # "multipart/mixed boundary=x", no ";"
    assert section(raw, "1") == b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"


def test_first_content_type_wins() -> None:
    assert section(c.EDGE["duplicate_content_type"], "1") == b"in first"


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = c.EDGE["digest"]
    assert section(raw, "1.MIME") == b"\r\n"
    assert section(raw, "1.HEADER") == b"Subject: digest one\r\n\r\n"
    assert section(raw, "1.TEXT") == b"first digest body"
    assert section(raw, "2.HEADER") is None


def test_boundary_ends_a_part_header_without_blank_line() -> None:
    raw = c.EDGE["part_header_without_blank_line"]
    assert section(raw, "1.MIME") == b"Content-Type: text/plain"
    assert section(raw, "1") == b""
    assert section(raw, "2") == b"second"
    assert section(raw, "3") == b""  # "--b" directly followed by "--b--": an empty part
    assert section(raw, "3.MIME") == b""


def test_longest_boundary_wins_and_outer_boundary_closes_inner_parts() -> None:
    raw = c.EDGE["prefix_boundaries"]  # outer "ab", inner "abc", inner never closed
    assert section(raw, "1") == b"--abc\r\nContent-Type: text/plain\r\n\r\ninner"
    assert section(raw, "1.1") == b"inner"
    assert section(raw, "2") == b"outer two"


def test_encapsulated_header_cut_by_boundary() -> None:
    raw = c.EDGE["rfc822_header_runs_into_boundary"]
    # The CRLF before "--r" leaves the cut header but stays in the rfc822 part.
    assert section(raw, "1") == b"Subject: inner\r\nFrom: x@y\r\n"
    assert section(raw, "1.HEADER") == b"Subject: inner\r\nFrom: x@y"
    # Dovecot's header filter reads on past the boundary up to the first empty line.
    assert section(raw, "1.HEADER.FIELDS.NOT (SUBJECT)") == (
        b"From: x@y\r\n--r\r\nContent-Type: text/plain\r\n\r\n"
    )


def test_encapsulated_header_without_blank_line_gets_none_added() -> None:
    raw = c.EDGE["rfc822_header_runs_to_eof"]
    assert section(raw, "1.HEADER.FIELDS (SUBJECT)") == b"Subject: inner\r\n"
    assert section(raw, "1.HEADER.FIELDS.NOT (SUBJECT)") == b"From: x@y"
    assert section(raw, "HEADER.FIELDS (SUBJECT)") == b"\r\n"


def test_rfc822_part_cut_right_after_its_mime_header() -> None:
    raw = c.EDGE["rfc822_cut_by_boundary"]
    assert section(raw, "1") == b""
    assert section(raw, "1.MIME") == b"Content-Type: message/rfc822"
    assert section(raw, "1.HEADER") == b""
    assert section(raw, "1.HEADER.FIELDS.NOT (SUBJECT)") == b"\r\n"
    assert section(raw, "2") == b"after"


def test_close_delimiter_in_preamble_leaves_no_parts() -> None:
    assert section(c.EDGE["close_in_preamble"], "1") is None


def test_lf_only_structure_is_found() -> None:
    raw = c.EDGE["lf_multipart"]
    assert section(raw, "1") == b"lf part"
    assert section(raw, "1.MIME") == b"Content-Type: text/plain\n\n"
    assert section(raw, "TEXT") == b"pre\n--lf\nContent-Type: text/plain\n\nlf part\n--lf--\nepi\n"


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError):
        extract_section(c.PLAIN, (), "MIME")
    with pytest.raises(ValueError):
        extract_section(c.PLAIN, (0,), None)
    with pytest.raises(ValueError):
        extract_section(c.PLAIN, (1,), "BODY")


def test_deep_nesting_does_not_recurse_without_bound() -> None:
    depth = 300
    head = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    raw = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + head + b"leaf\r\n"
    assert section(raw, ".".join(["1"] * 99)) is not None


# --------------------------------------------------------------------------- properties

_parts = st.lists(st.text(alphabet="abc xyz\r\n", max_size=30), min_size=1, max_size=4)


@given(_parts, st.sampled_from(["plain", "mixed", "alternative"]))
def test_generated_multiparts_roundtrip(bodies: list[str], subtype: str) -> None:
    """Each part's MIME header + body is exactly what was put between the delimiters."""
    bodies = [b.replace("\r", "").replace("\n", "\r\n") for b in bodies]
    bodies = [b for b in bodies if not b.startswith("-")]
    chunks = [f"--sep\r\nX-N: {i}\r\n\r\n{body}\r\n" for i, body in enumerate(bodies)]
    raw = (
        f"Content-Type: multipart/{subtype}; boundary=sep\r\n\r\n" + "".join(chunks) + "--sep--\r\n"
    ).encode()
    for i, body in enumerate(bodies, 1):
        if "\r\n--sep" in "\r\n" + body:
            return
        assert section(raw, f"{i}.MIME") == f"X-N: {i - 1}\r\n\r\n".encode()
        assert section(raw, str(i)) == body.encode()
    assert section(raw, str(len(bodies) + 1)) is None
    assert section(raw, "HEADER") + section(raw, "TEXT") == raw  # type: ignore[operator]


# --------------------------------------------------------------------------- blank line + boundary


def test_blank_line_right_before_a_boundary_belongs_to_the_boundary() -> None:
    raw = c.EDGE["empty_body_before_boundary"]
    assert section(raw, "1.MIME") == b"Content-Type: text/plain; charset=utf-8\r\n"
    assert section(raw, "1") == b""
    assert section(raw, "2.MIME") == b""  # a header of just CRLF is empty
    assert section(raw, "2") == b""


def test_encapsulated_header_ending_right_before_a_boundary() -> None:
    raw = c.EDGE["empty_body_before_boundary"]
    assert section(raw, "3.MIME") == b"Content-Type: message/rfc822\r\n\r\n"
    # The CRLF leaves the inner header but stays in the message/rfc822 part.
    assert section(raw, "3") == b"Subject: s\r\nFrom: a\r\n\r\n"
    assert section(raw, "3.HEADER") == b"Subject: s\r\nFrom: a\r\n"
    assert section(raw, "3.1.MIME") == b"Subject: s\r\nFrom: a\r\n"
    assert section(raw, "3.TEXT") == b""
    # HEADER.FIELDS still filters the raw stream up to its first empty line.
    assert section(raw, "3.HEADER.FIELDS (SUBJECT)") == b"Subject: s\r\n\r\n"
    assert section(raw, "3.HEADER.FIELDS.NOT (SUBJECT)") == b"From: a\r\n\r\n"


def test_header_fields_of_an_empty_encapsulated_message_stop_at_the_boundary() -> None:
    raw = c.EDGE["rfc822_blank_line_before_boundary"]
    assert section(raw, "1.MIME") == b"Content-Type: message/rfc822\r\n"
    assert section(raw, "1") == b""
    assert section(raw, "1.HEADER") == b""
    # The inner message starts at the boundary's CRLF: an empty header, never the
    # next part's fields.
    assert section(raw, "1.HEADER.FIELDS (SUBJECT)") == b"\r\n"
    assert section(raw, "1.HEADER.FIELDS.NOT (SUBJECT)") == b"\r\n"
    assert section(raw, "2.MIME") == b"Content-Type: text/plain\r\nSubject: later\r\n\r\n"


def test_non_empty_encapsulated_header_cut_by_a_boundary_still_reads_past_it() -> None:
    # Dovecot's header filter ignores boundaries once the inner header has a line.
    raw = c.EDGE["rfc822_header_runs_into_boundary"]
    assert section(raw, "1.HEADER.FIELDS (SUBJECT CONTENT-TYPE)") == (
        b"Subject: inner\r\nContent-Type: text/plain\r\n\r\n"
    )


def test_own_boundary_after_the_blank_line_keeps_the_header_whole() -> None:
    raw = c.EDGE["prefix_boundaries"]  # --abc also starts with the outer --ab
    assert section(raw, "1.MIME") == b"Content-Type: multipart/alternative; boundary=abc\r\n\r\n"
    assert section(raw, "1.1") == b"inner"


def test_longer_outer_boundary_after_a_multipart_header_cuts_it() -> None:
    raw = c.EDGE["outer_boundary_after_multipart_header"]
    assert section(raw, "1.MIME") == b"Content-Type: multipart/mixed; boundary=d\r\n"
    assert section(raw, "1") == b""
    assert section(raw, "1.1") is None
    assert section(raw, "2") == b"body"
