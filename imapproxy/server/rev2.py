"""IMAP4rev2 (RFC 9051) next to IMAP4rev1: what changes once a client sent
``ENABLE IMAP4rev2`` (RFC 9051 Appendix A and E).

A server offering both keeps IMAP4rev1 behaviour for every client that did not
enable IMAP4rev2. For one that did:

* Mailbox names are UTF-8 both ways (Appendix A: no UTF-8 strings for rev1 clients,
  whose names stay modified UTF-7; the replica keeps the upstream's modified UTF-7).
* SEARCH answers with ESEARCH (E.4): a SEARCH without RETURN is ``RETURN (ALL)``.
* No ``\\Recent``, no RECENT and no ``OK [UNSEEN n]`` on SELECT/EXAMINE (E.11, E.12);
  SELECT/EXAMINE send an untagged LIST for the mailbox (E.10).
* LIST follows the LIST-EXTENDED rules (E.2): a level that is no mailbox is
  ``\\NonExistent``; child and special-use attributes are always there (§6.3.9.5 and
  RFC 6154 §2 allow them without the return option).

IMAP4rev2 is offered only while every extension it folds in (E.2, E.3) is offered.
Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from imapproxy import protocol as p

#: The extensions RFC 9051 folds into IMAP4rev2 (Appendix E items 2 and 3), as they
#: are advertised; LITERAL+ stands for LITERAL- (it is the stronger of the two).
FOLDED = frozenset(
    {
        "NAMESPACE",
        "UNSELECT",
        "UIDPLUS",
        "ESEARCH",
        "SEARCHRES",
        "ENABLE",
        "IDLE",
        "SASL-IR",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "MOVE",
        "LITERAL+",
        "BINARY",
        "SPECIAL-USE",
        "STATUS=SIZE",
    }
)


def offered(capabilities: list[str]) -> bool:
    """Whether IMAP4rev2 may be advertised next to these capabilities."""
    return set(capabilities) >= FOLDED


def to_replica(name: str) -> str:
    """A UTF-8 mailbox name from a rev2 client, as the replica spells it."""
    return p.encode_mutf7(name)


def to_client(name: str) -> str:
    """A replica name (modified UTF-7) as a rev2 client reads it; a name that is not
    valid modified UTF-7 is passed as it is."""
    try:
        return p.decode_mutf7(name)
    except p.ParseError:
        return name


_NAME_FIELDS: dict[type, tuple[str, ...]] = {
    p.Select: ("mailbox",),
    p.Status: ("mailbox",),
    p.Create: ("mailbox",),
    p.Delete: ("mailbox",),
    p.Subscribe: ("mailbox",),
    p.Unsubscribe: ("mailbox",),
    p.Rename: ("old", "new"),
    p.Copy: ("mailbox",),
    p.Move: ("mailbox",),
    p.AppendStart: ("mailbox",),
}


def adapt(command: Any) -> Any:
    """The command of a rev2 session as the rev1 handlers take it."""
    changes: dict[str, Any] = {
        field: to_replica(getattr(command, field)) for field in _NAME_FIELDS.get(type(command), ())
    }
    if isinstance(command, p.List):
        changes["reference"] = to_replica(command.reference)
        changes["patterns"] = tuple(to_replica(pattern) for pattern in command.patterns)
    if isinstance(command, p.Search) and command.return_options is None:
        changes["return_options"] = ()
    return dataclasses.replace(command, **changes) if changes else command
