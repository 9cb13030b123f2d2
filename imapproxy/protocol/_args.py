"""A cursor over a command's lexed arguments, with typed accessors.

Every accessor raises ParseError with a client-safe reason; the command
parser turns that into a ``CommandError`` event.
"""

from __future__ import annotations

import re

from ._errors import ParseError
from ._seqset import SequenceSet, parse_sequence_set
from ._values import Atom, Value

__all__ = ["Args", "astring_bytes", "astring_str"]

_NUMBER = re.compile(r"\d+\Z")


def astring_bytes(value: Value, what: str = "string") -> bytes:
    """An astring (atom, quoted or literal) as bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Atom):
        return value.value.encode("utf-8")
    raise ParseError(f"expected {what}")


def astring_str(value: Value, what: str = "string") -> str:
    """An astring decoded as UTF-8 (mailbox names, charsets)."""
    if isinstance(value, Atom):
        return value.value
    data = astring_bytes(value, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"invalid UTF-8 in {what}") from None


class Args:
    """Sequential access to the values after the command name."""

    def __init__(self, values: list[Value]) -> None:
        self.values = values
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.values)

    def peek(self) -> Value:
        return self.values[self.pos] if self.pos < len(self.values) else None

    def peek_atom(self) -> str | None:
        """Upper-cased text of the next value if it is an atom."""
        value = self.peek()
        return value.value.upper() if isinstance(value, Atom) else None

    def next(self, what: str = "argument") -> Value:
        if self.pos >= len(self.values):
            raise ParseError(f"missing {what}")
        value = self.values[self.pos]
        self.pos += 1
        return value

    def atom(self, what: str = "atom") -> str:
        value = self.next(what)
        if not isinstance(value, Atom):
            raise ParseError(f"expected {what}")
        return value.value

    def astring(self, what: str = "string") -> bytes:
        return astring_bytes(self.next(what), what)

    def string_or_nil(self, what: str = "string") -> bytes | None:
        value = self.next(what)
        if isinstance(value, Atom) and value.value.upper() == "NIL":
            return None
        if not isinstance(value, bytes):
            raise ParseError(f"expected {what}")
        return value

    def mailbox(self) -> str:
        return astring_str(self.next("mailbox name"), "mailbox name")

    def number(self, what: str = "number") -> int:
        value = self.next(what)
        if isinstance(value, Atom) and _NUMBER.match(value.value):
            return int(value.value)
        raise ParseError(f"expected {what}")

    def sequence_set(self) -> SequenceSet:
        value = self.next("sequence set")
        if not isinstance(value, Atom):
            raise ParseError("expected sequence set")
        return parse_sequence_set(value.value)

    def list(self, what: str = "list") -> tuple[Value, ...]:
        value = self.next(what)
        if not isinstance(value, tuple):
            raise ParseError(f"expected {what}")
        return value

    def end(self) -> None:
        if self.pos < len(self.values):
            raise ParseError("unexpected extra arguments")
