"""Exceptions raised by the protocol core.

Kept in their own module so every other private module can raise them without
import cycles.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class for everything the protocol core raises on bad input."""


class ParseError(ProtocolError):
    """Input does not follow the IMAP grammar.

    ``reason`` is written for humans and contains no internal detail, so a
    server may send it to a client in a ``BAD`` response. ``tag`` is the
    command tag when one could be read, so the reply can be tagged.
    """

    def __init__(self, reason: str, tag: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag
