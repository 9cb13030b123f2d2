"""IMAP date and date-time text (RFC 3501 ``date`` and ``date-time``)."""

from __future__ import annotations

import datetime
import re

from ._errors import ParseError

__all__ = ["format_date", "format_datetime", "parse_date", "parse_datetime"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_INDEX = {m.upper(): i + 1 for i, m in enumerate(MONTHS)}

_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATETIME = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)


def _month(name: str) -> int:
    try:
        return _MONTH_INDEX[name.upper()]
    except KeyError:
        raise ParseError("invalid month name") from None


def parse_date(text: str) -> datetime.date:
    """Parse ``1-Feb-1994`` (SEARCH dates)."""
    m = _DATE.match(text)
    if not m:
        raise ParseError("invalid date")
    try:
        return datetime.date(int(m[3]), _month(m[2]), int(m[1]))
    except ValueError:
        raise ParseError("invalid date") from None


def format_date(d: datetime.date) -> str:
    """Format a SEARCH date, ``1-Feb-1994``."""
    return f"{d.day}-{MONTHS[d.month - 1]}-{d.year:04d}"


def parse_datetime(text: str) -> datetime.datetime:
    """Parse ``17-Jul-1996 02:44:25 -0700`` into an aware datetime.

    The day may be space-padded, as RFC 3501 date-time prescribes.
    """
    m = _DATETIME.match(text)
    if not m:
        raise ParseError("invalid date-time")
    offset = datetime.timedelta(hours=int(m[8]), minutes=int(m[9]))
    if m[7] == "-":
        offset = -offset
    try:
        return datetime.datetime(
            int(m[3]),
            _month(m[2]),
            int(m[1].strip()),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=datetime.timezone(offset),
        )
    except ValueError:
        raise ParseError("invalid date-time") from None


def format_datetime(dt: datetime.datetime) -> str:
    """Format ``" 7-Jul-1996 02:44:25 -0700"`` (day space-padded to 2 chars).

    A naive datetime is taken as UTC.
    """
    offset = dt.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f"{dt.day:2d}-{MONTHS[dt.month - 1]}-{dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
