"""Messages whose ENVELOPE and BODYSTRUCTURE are easy to get wrong, and a way to read
both as values from any IMAP server (the proxy or Dovecot directly).

The generated corpus gives the realistic shapes (multipart/alternative, attachments
with non-ASCII names, message/rfc822); the hand-written ones add what real mail
carries now and then: groups, comments, quoted and encoded names, 8-bit headers,
folded fields, RFC 2231 continuations, bare LF line ends, a message without
MIME-Version, a digest, missing fields.
"""

from __future__ import annotations

import imaplib

from imapproxy.protocol import NEED_DATA, ResponseReader, UntaggedData, Value
from tests.support.messages import make_messages

_HAND_WRITTEN: list[bytes] = [
    # Addresses: group, comment as name, quoted name with escapes, encoded word, several.
    b'From: "Doe, John \\"JD\\"" <john.doe@example.org>\r\n'
    b"Sender: sec@example.org (The Secretary)\r\n"
    b"Reply-To: =?UTF-8?Q?J=C3=B6rg?= <joerg@example.org>\r\n"
    b"To: undisclosed-recipients:;\r\n"
    b"Cc: team: a@example.org, B <b@example.org>;, c@example.org\r\n"
    b"Bcc: <d@example.org>\r\n"
    b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?= and\r\n  a folded tail\r\n"
    b"Date: Tue, 4 Jun 2024 10:00:00 +0200 (CEST)\r\n"
    b"Message-ID: <hand.1@example.org>\r\n"
    b"In-Reply-To: <parent@example.org>\r\n"
    b"\r\n"
    b"Body without MIME-Version.\r\n",
    # 8-bit raw header bytes, no MIME-Version but a Content-Type (ignored), LF line ends.
    "From: Jörg Müller <joerg@example.org>\nTo: 받는사람 <r@example.org>\n"
    "Subject: Grüße aus Köln\nContent-Type: text/html; charset=utf-8\n\n"
    "Hallo\nzusammen\n".encode(),
    # Every Content-* field, upper-case type and encoding, RFC 2231 continuations.
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: fields\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/MIXED; boundary=XyZ; foo=bar\r\n"
    b"Content-Language: en, de\r\n"
    b"\r\n"
    b"--XyZ\r\n"
    b'Content-Type: TEXT/PLAIN; CHARSET="ISO-8859-1"; format=flowed\r\n'
    b"Content-Transfer-Encoding: QUOTED-PRINTABLE\r\n"
    b"Content-ID: <part1@example.org>\r\n"
    b"Content-Description: The text\r\n"
    b"Content-Language: fr\r\n"
    b"Content-Location: http://example.org/a.txt\r\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    b"\r\n"
    b"Caf=E9\r\n"
    b"--XyZ\r\n"
    b"Content-Type: application/octet-stream;\r\n"
    b" name*0*=UTF-8''%E2%82%AC%20rates;\r\n"
    b' name*1=".pdf"\r\n'
    b'Content-Disposition: inline; filename="rates.pdf"; size=3\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"YWJj\r\n"
    b"--XyZ--\r\n"
    b"epilogue\r\n",
    # Nested alternative in mixed, a digest with an implicit message/rfc822, no Date.
    b"From: a@example.org\r\nSubject:\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n\r\nplain, no content type\r\n"
    b"--inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/digest; boundary="dig"\r\n'
    b"\r\n"
    b"--dig\r\n\r\nFrom: x@example.org\r\nSubject: in a digest\r\n\r\ndigested\r\n"
    b"--dig--\r\n"
    b"--outer--\r\n",
    # Folds and blanks: the Subject collapses them, other fields only lose the line ends;
    # a repeated Subject's last one counts; addresses without a domain; comment names.
    b"From: a@b.c\r\nSubject:  a\tb   c  \r\nSubject: a \r\n \r\n b  \r\nDate:  d1 \r\n"
    b"Message-ID: <a\r\n  b>\r\nTo: foo\r\n"
    b'Cc: "Q" <x@y>, Zed (comment) <z@y>, w@y (Wc), bare\r\n'
    b"Content-ID: x\r\n  y\r\nContent-Description: p \r\n\t q\r\n\r\nx",
    # Content-* without MIME-Version counts only when a Content-Type is there.
    b"From: a@b.c\r\nContent-ID: <c>\r\nContent-Type: text/plain; charset=x\r\n\r\nx\r\n",
    b"From: a@b.c\r\nContent-ID: <c>\r\n\r\nx\r\n",
    # Almost nothing: no header fields but one, no body.
    b"Subject: lonely\r\n\r\n",
]


def samples() -> list[bytes]:
    """Generated messages of every shape, then the hand-written ones."""
    generated = [m.raw for m in make_messages(24, seed=77)]
    return generated + _HAND_WRITTEN


def fetch_values(client: imaplib.IMAP4, uids: list[int], items: str) -> dict[int, dict[str, Value]]:
    """UID FETCH items of uids in the selected mailbox, parsed into IMAP values."""
    typ, data = client.uid("FETCH", ",".join(map(str, uids)), f"({items})")
    assert typ == "OK", (typ, data)
    reader = ResponseReader()
    # imaplib strips "* ", the name FETCH and the line ends; put them back.
    lines = b""
    for chunk in _responses(data):
        number, _, rest = chunk.partition(b" ")
        lines += b"* " + number + b" FETCH " + rest + b"\r\n"
    reader.receive_data(lines)
    out: dict[int, dict[str, Value]] = {}
    while (event := reader.next_event()) is not NEED_DATA:
        assert isinstance(event, UntaggedData) and event.name == "FETCH", event
        values = event.values[0]
        assert isinstance(values, tuple)
        item = {str(values[i]).upper(): values[i + 1] for i in range(0, len(values), 2)}
        out[int(item["UID"])] = item  # type: ignore[call-overload]
    return out


def _responses(data: list[object]) -> list[bytes]:
    """imaplib's pieces back into one byte string per response (literals inline)."""
    out: list[bytes] = []
    current = b""
    for piece in data:
        if isinstance(piece, tuple):
            current += piece[0] + b"\r\n" + piece[1]
        elif isinstance(piece, bytes):
            current += piece
            out.append(current)
            current = b""
    if current:
        out.append(current)
    return out
