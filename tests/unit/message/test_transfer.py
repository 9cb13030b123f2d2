"""Transfer decoding for BINARY (RFC 3516): base64, quoted-printable, identity, unknown."""

from __future__ import annotations

import pytest

from imapproxy.message import ParsedMessage, UnknownEncoding

_MESSAGE = (
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 =\r\nsoft   \r\nline=3D\r\n"
    b"--b\r\nContent-Transfer-Encoding: BASE64\r\n\r\nAAEC\r\n/w==\r\n"
    b"--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    b"--b\r\n\r\nplain =41\r\n"
    b"--b--\r\n"
)


def test_quoted_printable_undoes_escapes_soft_breaks_and_trailing_blanks() -> None:
    assert ParsedMessage(_MESSAGE).binary((1,)) == "café soft\r\nline=".encode()


def test_base64_gives_the_raw_bytes_nul_included() -> None:
    assert ParsedMessage(_MESSAGE).binary((2,)) == b"\x00\x01\x02\xff"


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(UnknownEncoding):
        ParsedMessage(_MESSAGE).binary((3,))


def test_no_encoding_passes_through_and_a_missing_part_is_empty() -> None:
    parsed = ParsedMessage(_MESSAGE)
    assert parsed.binary((4,)) == b"plain =41"
    assert parsed.binary((9,)) == b""


# BINARY[] of a whole message (shapes checked against Dovecot in
# tests/integration/test_binary_equality.py).

_KNOWN = (
    b"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain\r\n\r\n"
    b"a=3Db\r\n"
    b"--b\r\nContent-Transfer-Encoding: BASE64\r\n\r\nAAEC\r\n/w==\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
    b"--b\r\n\r\nplain =41\r\n"
    b"--b--\r\n"
)


def test_binary_of_a_whole_message_decodes_each_part_and_says_binary() -> None:
    assert ParsedMessage(_KNOWN).binary(()) == (
        b"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b"a=b\r\n"
        b"--b\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\nhi\r\n"
        b"--b\r\n\r\nplain =41\r\n"
        b"--b--\r\n"
    )


def test_binary_of_an_attached_message_is_converted_inside() -> None:
    assert ParsedMessage(_KNOWN).binary((3,)) == (
        b"Subject: in\r\nContent-Transfer-Encoding: binary\r\n\r\nhi"
    )


def test_binary_of_a_whole_message_with_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(UnknownEncoding):
        ParsedMessage(_MESSAGE).binary(())


def test_an_encoding_that_starts_on_a_continuation_line_is_unknown() -> None:
    # Dovecot answers NO [UNKNOWN-CTE] for it, for the part and for the whole message.
    folded = b"Content-Transfer-Encoding:\r\n base64\r\n\r\naGk=\r\n"
    with pytest.raises(UnknownEncoding):
        ParsedMessage(folded).binary((1,))
    with pytest.raises(UnknownEncoding):
        ParsedMessage(folded).binary(())


def test_a_message_without_encoded_parts_is_its_own_binary() -> None:
    plain = b"Subject: p\r\n\r\nhello\r\n"
    assert ParsedMessage(plain).binary(()) == plain
