"""FETCH lines of metadata items, formatted straight to bytes.

The header FETCH a mail client sends for a whole mailbox (``UID FLAGS INTERNALDATE
RFC822.SIZE ENVELOPE BODYSTRUCTURE``) is answered with one line per message. Building
a tuple of values per message and walking it in the generic serializer cost about
30 µs of CPU per message: 2 to 3 times Dovecot's time to serve a cached header FETCH
of 10,000 messages (bench/serve_fetch.py). Here what is the same for every line is
done once per command (the item names in one %-format, each distinct flag list, the
cache keys' shape and whether they are sealed), and a line is that format applied to
its values: about 8 µs with reading its record.

Only items whose whole wire form is known here take this path: UID, FLAGS,
INTERNALDATE, RFC822.SIZE, MODSEQ, and ENVELOPE, BODYSTRUCTURE and BODY, which the
cache keeps as the upstream's bytes. A FETCH of anything else (body sections, which
also set ``\\Seen``) goes the generic way. The bytes are those the generic way gives
(``replies.untagged``); tests/unit/server/test_fetch_streaming.py compares the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import attrgetter

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

#: One item of a line: the message's value (wire bytes, or a number its format
#: writes), or None when the cache lacks it (the message is then fetched upstream first).
Piece = Callable[[Message], bytes | int | None]


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

    def _pieces(self, tx: Tx) -> list[tuple[bytes, Piece]]:
        """Each item's format in the line, and its value's piece."""
        pieces: list[tuple[bytes, Piece]] = []
        for attribute in self.attributes:
            name = attribute.name
            if name == "UID":
                pieces.append((b"%d", attrgetter("uid")))
            elif name == "FLAGS":
                pieces.append((b"%s", self._flag_list))
            elif name == "INTERNALDATE":
                pieces.append((b"%s", lambda m: _quoted(m.internaldate)))
            elif name == "RFC822.SIZE":
                pieces.append((b"%d", attrgetter("size")))
            elif name == "MODSEQ":
                pieces.append((b"(%d)", attrgetter("modseq")))
            else:
                pieces.append((b"%s", _cached(cache.getter(tx, self.account, _CACHED[name]))))
        return pieces

    def lines(
        self, tx: Tx, messages: list[Message], seq_of: dict[UID, SeqNum]
    ) -> tuple[list[bytes], list[Message]]:
        """The lines of the messages the cache can answer, and the messages it cannot."""
        formats_and_pieces = self._pieces(tx)
        pieces = [piece for _, piece in formats_and_pieces]
        # One %-format per command, and a line is one format of its values: 4.6 µs a
        # line, against 6.0-6.8 joining its pieces. The cached items' values count as
        # served from the cache.
        items = b"".join(
            head.replace(b"%", b"%%") + form
            for head, (form, _) in zip(self._heads, formats_and_pieces, strict=True)
        )
        template = b"* %d FETCH (UID %d" + items + b")\r\n"
        cached = [i + 2 for i, a in enumerate(self.attributes) if a.name in _CACHED]
        out: list[bytes] = []
        misses: list[Message] = []
        served = 0
        for message in messages:
            uid = message.uid
            values: list[object] = [seq_of[uid], uid]
            for piece in pieces:
                value = piece(message)
                if value is None:
                    misses.append(message)
                    break
                values.append(value)
            else:
                out.append(template % tuple(values))
                for i in cached:
                    served += len(values[i])  # type: ignore[arg-type]
        self.served += served
        return out, misses
