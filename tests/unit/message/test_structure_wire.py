"""ENVELOPE and BODYSTRUCTURE bytes the proxy builds follow RFC 3501's grammar: a
multipart's parts and an envelope's addresses run together without a space, as
Dovecot writes them, and the bytes parse back to the same values."""

from __future__ import annotations

import pytest

from imapproxy.message import fetch_structure
from imapproxy.message.structure_wire import body_bytes, envelope_bytes
from imapproxy.protocol import NEED_DATA, ResponseReader, UntaggedData, Value, serialize_value
from tests.support.structure_samples import samples

TWO_PARTS = (
    b"From: A <a@x.org>, B <b@x.org>\r\nTo: c@x.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n"
)


def _parsed(name: str, data: bytes) -> Value:
    reader = ResponseReader()
    reader.receive_data(b"* 1 FETCH (" + name.encode() + b" " + data + b")\r\n")
    event = reader.next_event()
    assert isinstance(event, UntaggedData) and reader.next_event() is NEED_DATA
    values = event.values[0]
    assert isinstance(values, tuple)
    return values[1]


def test_parts_and_addresses_run_together_as_dovecot_writes_them() -> None:
    structure = body_bytes(fetch_structure.bodystructure(TWO_PARTS))
    assert structure.startswith(b'(("text" "plain" ')
    assert b' 0 NIL NIL NIL NIL)("text" "html" ' in structure
    assert b'NIL NIL NIL NIL) "alternative" ("boundary" "b")' in structure
    body = body_bytes(fetch_structure.body(TWO_PARTS))
    assert b' 2 0)("text" "html" ' in body and body.endswith(b') "alternative")')
    envelope = envelope_bytes(fetch_structure.envelope(TWO_PARTS))
    assert b'(("A" NIL "a" "x.org")("B" NIL "b" "x.org"))' in envelope


@pytest.mark.parametrize("raw", samples(), ids=lambda raw: str(len(raw)))
def test_every_shape_parses_back_to_the_same_values(raw: bytes) -> None:
    for name, build, write in (
        ("ENVELOPE", fetch_structure.envelope, envelope_bytes),
        ("BODYSTRUCTURE", fetch_structure.bodystructure, body_bytes),
        ("BODY", fetch_structure.body, body_bytes),
    ):
        value = build(raw)
        assert _parsed(name, write(value)) == _parsed(name, serialize_value(value)), name
