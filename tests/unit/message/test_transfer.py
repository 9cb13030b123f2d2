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
