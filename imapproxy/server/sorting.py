"""SORT keys (RFC 5256 §3, RFC 5957 DISPLAYFROM/DISPLAYTO) computed from a cached header.

Sans-IO: :func:`facts` reads one message's header block and metadata, :func:`sort`
orders a list of them by a sort program. The keys are Dovecot 2.3's, so the order is
the one a client gets from the server directly:

* FROM/TO/CC: the local part of the first address of the *first* such field (a group
  counts with its name), folded by :func:`imapproxy.message.base_subject.casemap`.
  Addresses are parsed by the ENVELOPE builder's parser (Dovecot's
  message_address_parse), so both agree on every odd address.
* DISPLAYFROM/DISPLAYTO: the first address's display name, decoded; without one,
  ``mailbox@domain``.
* SUBJECT: the base subject (RFC 5256 §2.1), folded.
* DATE: the ``Date:`` field as an instant (time zone applied); missing or unparseable,
  the arrival time. ARRIVAL: INTERNALDATE. SIZE: RFC822.SIZE.
* A missing field sorts as the empty string. Each key compares by code point; REVERSE
  flips only its own key; ties after the last key go to the lower sequence number.
"""

from __future__ import annotations

import email.utils
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cmp_to_key

from imapproxy.message import header_value
from imapproxy.message.base_subject import base_subject, casemap, decode_words
from imapproxy.message.fetch_structure import _Addresses  # Dovecot's address parser

__all__ = ["ALL_KEYS", "SortFacts", "facts", "sent_date", "sort"]

ALL_KEYS = frozenset(
    ["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"]
)


@dataclass(frozen=True)
class SortFacts:
    """One message's sort keys; ``seq`` breaks ties, ``number`` is what is answered."""

    seq: int
    number: int
    arrival: int
    date: int
    size: int
    subject: str
    is_reply: bool
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str

    def key(self, name: str) -> str | int:
        keys: dict[str, str | int] = {
            "ARRIVAL": self.arrival,
            "DATE": self.date,
            "SIZE": self.size,
            "SUBJECT": self.subject,
            "FROM": self.from_,
            "TO": self.to,
            "CC": self.cc,
            "DISPLAYFROM": self.display_from,
            "DISPLAYTO": self.display_to,
        }
        return keys[name]


def _first_address(value: bytes | None) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(name, mailbox, domain) of the first address in a field's value, all None when
    the field or its address is missing."""
    if value is None:
        return None, None, None
    parsed = _Addresses(value).parse()
    if not parsed:
        return None, None, None
    name, _, mailbox, domain = parsed[0]
    return name, mailbox, domain  # type: ignore[return-value]


def _mailbox_key(address: tuple[bytes | None, bytes | None, bytes | None]) -> str:
    _, mailbox, _ = address
    return casemap(mailbox.decode("utf-8", "replace")) if mailbox else ""


def _display_key(address: tuple[bytes | None, bytes | None, bytes | None]) -> str:
    name, mailbox, domain = address
    if name:
        decoded = decode_words(name)
        if decoded:
            return casemap(decoded)
    if mailbox is not None and domain is not None:
        return casemap((mailbox + b"@" + domain).decode("utf-8", "replace"))
    if mailbox is not None:
        return casemap(mailbox.decode("utf-8", "replace"))
    return ""


def sent_date(header: bytes, arrival: int) -> int:
    """The ``Date:`` field as seconds since the epoch, else the arrival time."""
    value = header_value(header, b"date")
    if value is not None:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        if parsed is not None:
            if parsed[9] is None:  # no zone: taken as UTC, not local time
                parsed = (*parsed[:9], 0)
            try:
                stamp = email.utils.mktime_tz(parsed)
            except (OverflowError, ValueError):
                stamp = 0
            if stamp != 0:
                return int(stamp)
    return arrival


def facts(
    seq: int,
    number: int,
    arrival: datetime,
    size: int,
    header: bytes,
    keys: Collection[str] = ALL_KEYS,
) -> SortFacts:
    """The sort keys of one message from its header block (b"" when not cached); only
    those in ``keys`` are computed, the others are left empty."""
    when = int(arrival.timestamp())
    subject, reply = ("", False)
    if "SUBJECT" in keys:
        subject, reply = base_subject(header_value(header, b"subject"))
    addresses = {
        field: _first_address(header_value(header, field.lower().encode()))
        for field in ("FROM", "TO", "CC")
        if field in keys or f"DISPLAY{field}" in keys
    }
    none = (None, None, None)
    return SortFacts(
        seq=seq,
        number=number,
        arrival=when,
        date=sent_date(header, when) if "DATE" in keys else when,
        size=size,
        subject=subject,
        is_reply=reply,
        from_=_mailbox_key(addresses.get("FROM", none)) if "FROM" in keys else "",
        to=_mailbox_key(addresses.get("TO", none)) if "TO" in keys else "",
        cc=_mailbox_key(addresses.get("CC", none)) if "CC" in keys else "",
        display_from=_display_key(addresses.get("FROM", none)) if "DISPLAYFROM" in keys else "",
        display_to=_display_key(addresses.get("TO", none)) if "DISPLAYTO" in keys else "",
    )


def sort(messages: Sequence[SortFacts], program: Sequence[tuple[str, bool]]) -> list[SortFacts]:
    """Messages in the program's order, ties broken by sequence number."""

    def compare(a: SortFacts, b: SortFacts) -> int:
        for name, reverse in program:
            x, y = a.key(name), b.key(name)
            if x != y:
                result = -1 if x < y else 1  # type: ignore[operator]
                return -result if reverse else result
        return -1 if a.seq < b.seq else (1 if a.seq > b.seq else 0)

    return sorted(messages, key=cmp_to_key(compare))
