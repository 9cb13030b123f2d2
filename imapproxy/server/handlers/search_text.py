"""Text SEARCH keys evaluated on the replica, for when the upstream cannot be asked.

Online, text keys go to the upstream (its charset and MIME rules are the reference).
Offline the replica answers: header keys (FROM, TO, CC, BCC, SUBJECT, HEADER,
SENTBEFORE/ON/SINCE) from the cached header block, which the background sync keeps
for every message; BODY and TEXT from cached full messages. Matching follows RFC
3501 §6.4.4: case-insensitive substring, on header values with RFC 2047 encoded
words decoded and on text parts decoded from their transfer encoding and charset.
A message whose needed content is not cached raises Unsearchable: the handler
leaves it out and says how many it could not search.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import date
from email.message import EmailMessage

from imapproxy import message as mime
from imapproxy import protocol as p
from imapproxy.store import Tx, cache
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message

HEADER_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
SENT_KEYS = {"SENTBEFORE", "SENTON", "SENTSINCE"}


class Unsearchable(Exception):
    """The content this key needs is not in the replica."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class CachedText:
    """One message's cached header and body, parsed at most once per SEARCH."""

    def __init__(self, tx: Tx, account: int, message: Message) -> None:
        self.tx = tx
        self.account = account
        self.message = message
        self._headers: EmailMessage | None = None
        self._body: str | None = None

    def _get(self, kind: Kind) -> bytes | None:
        return cache.get(self.tx, self.account, self.message.blob, kind)  # type: ignore[arg-type]

    def headers(self) -> EmailMessage:
        if self._headers is None:
            block = self._get(Kind.HEADER)
            if block is None:
                full = self._get(Kind.FULL)
                if full is None:
                    raise Unsearchable()
                block = mime.split_header(full)[0]
            parsed = email.message_from_bytes(block, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self._headers = parsed
        return self._headers

    def header_values(self, field: str) -> list[str]:
        values = []
        for value in self.headers().get_all(field) or []:
            try:
                values.append(str(value))
            except Exception:  # a header the parser cannot decode: search its raw text
                values.append(_text(value))
        return values

    def body(self) -> str:
        if self._body is None:
            full = self._get(Kind.FULL)
            if full is None:
                raise Unsearchable()
            parsed = email.message_from_bytes(full, policy=email.policy.default)
            parts = []
            for part in parsed.walk():
                if part.is_multipart():
                    continue
                try:
                    content = part.get_content()  # type: ignore[attr-defined]
                except Exception:
                    content = part.get_payload(decode=True) or b""
                if isinstance(content, bytes | bytearray):
                    content = bytes(content).decode("utf-8", "replace")
                if isinstance(content, str):
                    parts.append(content)
            self._body = "\n".join(parts)
        return self._body

    def sent_date(self) -> date | None:
        values = self.header_values("Date")
        if not values:
            return None
        try:
            return email.utils.parsedate_to_datetime(values[0]).date()
        except (TypeError, ValueError, IndexError):
            return None


def matches(key: p.SearchKey, content: CachedText) -> bool:
    """A text key against one message; raises Unsearchable when content is missing."""
    name = key.name
    if name in HEADER_KEYS:
        needle = _text(key.args[0]).casefold()
        return any(needle in v.casefold() for v in content.header_values(HEADER_KEYS[name]))
    if name == "HEADER":
        field, needle = _text(key.args[0]), _text(key.args[1]).casefold()
        return any(needle in v.casefold() for v in content.header_values(field))
    if name in SENT_KEYS:
        sent = content.sent_date()
        if sent is None:
            return False
        day: date = key.args[0]
        return {"SENTBEFORE": sent < day, "SENTON": sent == day, "SENTSINCE": sent >= day}[name]
    needle = _text(key.args[0]).casefold()
    if name == "BODY":
        return needle in content.body().casefold()
    # TEXT: the header and the body.
    in_header = any(needle in f"{k}: {v}".casefold() for k, v in content.headers().items())
    return in_header or needle in content.body().casefold()
