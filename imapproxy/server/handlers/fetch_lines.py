"""FETCH lines of metadata items, formatted straight to bytes.

The header FETCH a mail client sends for a whole mailbox (``UID FLAGS INTERNALDATE
RFC822.SIZE ENVELOPE BODYSTRUCTURE``) is answered with one line per message. Building
a tuple of values per message and walking it in the generic serializer cost about
30 µs of CPU per message: 2 to 3 times Dovecot's time to serve a cached header FETCH
of 10,000 messages (bench/serve_fetch.py). Here what is the same for every line is
done once per command (the item names, each distinct flag list, the cache keys'
shape), and a line is one ``bytes.join`` of its pieces: about 13 µs.

Only items whose whole wire form is known here take this path: UID, FLAGS,
INTERNALDATE, RFC822.SIZE, MODSEQ, and ENVELOPE, BODYSTRUCTURE and BODY, which the
cache keeps as the upstream's bytes. A FETCH of anything else (body sections, which
also set ``\\Seen``) goes the generic way. The bytes are those the generic way gives
(``replies.untagged``); tests/unit/server/test_fetch_streaming.py compares the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from imapproxy import protocol as p
from imapproxy.server.view import SelectedView
from imapproxy.store import Tx, cache
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.types import UID, BlobId, SeqNum

#: Items formatted here; BODY only without a section (it is then BODYSTRUCTURE's
#: shorter sibling, cached like it).
LINE_ITEMS = frozenset(
    {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE"}
)
_CACHED = {"ENVELOPE": Kind.ENVELOPE, "BODYSTRUCTURE": Kind.BODYSTRUCTURE, "BODY": Kind.BODY}

#: A string the serializer sends quoted as it is (quote_safe, and nothing to escape).
_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]{0,1024}")

#: One item of a line: the message's value as wire bytes, or None when the cache
#: lacks it (the message is then fetched upstream first).
Piece = Callable[[Message], bytes | None]


def _cached(get: Callable[[BlobId], bytes | None]) -> Piece:
    return lambda message: get(message.blob)


def applies(attributes: list[p.FetchAttribute]) -> bool:
    """Whether every item asked for can be formatted here."""
    return all(a.name in LINE_ITEMS or (a.name == "BODY" and a.section is None) for a in attributes)


def _quoted(text: str) -> bytes:
    data = text.encode()
    if _PLAIN.fullmatch(data):
        return b'"' + data + b'"'
    return p.serialize_value(data)  # escapes, or a literal: as the generic way


class LineFormat:
    """The FETCH lines of one command; ``lines`` renders a group of messages in one
    read transaction."""

    def __init__(self, view: SelectedView, attributes: list[p.FetchAttribute]) -> None:
        self.view = view
        self.attributes = attributes
        self.account = view.mailbox.account
        #: Bytes of ENVELOPE/BODYSTRUCTURE/BODY served, for the served-from-cache counter.
        self.served = 0
        self._flags: dict[tuple[tuple[str, ...], bool], bytes] = {}
        self._heads = [b" " + a.response_name().encode() + b" " for a in attributes]

    def _flag_list(self, message: Message) -> bytes:
        """FLAGS as view.flags_of shows them (\\Recent is per session), formatted once
        per distinct list."""
        view = self.view
        recent = message.uid in view.recent and not view.modes.rev2
        key = (message.flags, recent)
        formatted = self._flags.get(key)
        if formatted is None:
            formatted = p.serialize_value(view.flags_of(message))
            self._flags[key] = formatted
        return formatted

    def _pieces(self, tx: Tx) -> list[Piece]:
        pieces: list[Piece] = []
        for attribute in self.attributes:
            name = attribute.name
            if name == "UID":
                pieces.append(lambda m: b"%d" % m.uid)
            elif name == "FLAGS":
                pieces.append(self._flag_list)
            elif name == "INTERNALDATE":
                pieces.append(lambda m: _quoted(m.internaldate))
            elif name == "RFC822.SIZE":
                pieces.append(lambda m: b"%d" % m.size)
            elif name == "MODSEQ":
                pieces.append(lambda m: b"(%d)" % m.modseq)
            else:
                pieces.append(_cached(cache.getter(tx, self.account, _CACHED[name])))
        return pieces

    def lines(
        self, tx: Tx, messages: list[Message], seq_of: dict[UID, SeqNum]
    ) -> tuple[list[bytes], list[Message]]:
        """The lines of the messages the cache can answer, and the messages it cannot."""
        # (head, piece, whether its bytes count as served from the cache) per item.
        steps = [
            (head, piece, a.name in _CACHED)
            for head, piece, a in zip(self._heads, self._pieces(tx), self.attributes, strict=True)
        ]
        out: list[bytes] = []
        misses: list[Message] = []
        served = 0
        for message in messages:
            parts = [b"* %d FETCH (UID %d" % (seq_of[message.uid], message.uid)]
            size = 0
            for head, piece, cached in steps:
                value = piece(message)
                if value is None:
                    misses.append(message)
                    break
                if cached:
                    size += len(value)
                parts += (head, value)
            else:
                parts.append(b")\r\n")
                out.append(b"".join(parts))
                served += size
        self.served += served
        return out, misses
