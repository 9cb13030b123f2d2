"""ENVELOPE and BODYSTRUCTURE values written as RFC 3501's grammar spells them.

The generic serializer puts a space between every two items of a list, but these two
structures have lists whose items follow each other without one: a multipart's parts
(``body-type-mpart = 1*body SP media-subtype``) and an envelope's addresses
(``env-from = "(" 1*address ")"``), as Dovecot writes them:
``(("text" "plain" …)("text" "html" …) "alternative" …)``. A client with a strict
parser can refuse the spaced form. Values kept as the upstream's bytes never pass
here; this is for the ones the proxy builds (a message appended offline) or had to
re-serialize (an answer with literals in it).
"""

from __future__ import annotations

from imapproxy.protocol import Raw, Value, serialize_value

#: ENVELOPE fields that are address lists: from, sender, reply-to, to, cc, bcc.
_ADDRESS_FIELDS = range(2, 8)
#: In a message/rfc822 part: its envelope and body follow the common fields.
_RFC822_ENVELOPE, _RFC822_BODY = 7, 8


def upstream_structure_bytes(name: str, value: Value) -> bytes:
    """What is kept of an upstream's ENVELOPE, BODYSTRUCTURE or BODY (``name``): its
    own bytes where the response reader kept them, else the values written out."""
    if isinstance(value, Raw):
        return value.data
    return envelope_bytes(value) if name == "ENVELOPE" else body_bytes(value)


def envelope_bytes(envelope: Value) -> bytes:
    if not isinstance(envelope, tuple):
        return serialize_value(envelope)
    fields = [
        _run(field) if i in _ADDRESS_FIELDS and isinstance(field, tuple) else serialize_value(field)
        for i, field in enumerate(envelope)
    ]
    return b"(" + b" ".join(fields) + b")"


def body_bytes(body: Value) -> bytes:
    """A BODY or BODYSTRUCTURE value."""
    if not isinstance(body, tuple):
        return serialize_value(body)
    parts = 0
    while parts < len(body) and isinstance(body[parts], tuple):
        parts += 1
    if parts:  # multipart: its parts run together, then the subtype and extensions
        rest = [serialize_value(v) for v in body[parts:]]
        children = b"".join(body_bytes(part) for part in body[:parts])
        return b"(" + b" ".join([children, *rest]) + b")"
    rfc822 = (
        len(body) > _RFC822_BODY
        and _lower(body[0]) == b"message"
        and _lower(body[1]) == (b"rfc822")
    )
    fields = []
    for i, field in enumerate(body):
        if rfc822 and i == _RFC822_ENVELOPE:
            fields.append(envelope_bytes(field))
        elif rfc822 and i == _RFC822_BODY:
            fields.append(body_bytes(field))
        else:
            fields.append(serialize_value(field))
    return b"(" + b" ".join(fields) + b")"


def _run(items: tuple[Value, ...]) -> bytes:
    return b"(" + b"".join(serialize_value(item) for item in items) + b")"


def _lower(value: Value) -> bytes | None:
    return value.lower() if isinstance(value, bytes) else None
