"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §2.2-2.4), as Dovecot 2.3 builds them.

The caller gives one :class:`Threadable` per message that matched the search, in
mailbox (UID) order; the result is a list of :class:`Node` trees in the order the
RFC prescribes, and :func:`format_threads` writes them as the ``THREAD`` response.

Dovecot's choices where the RFC leaves room, kept so answers are equal:
* ``References`` gives the parent chain; without a valid message id in it, the first
  id of ``In-Reply-To`` does (RFC 5256 step 1.A).
* A duplicate Message-ID makes the later message unique (it is linked by its own
  references but nothing can point at it).
* The sort date of a message is its sent date (``Date:``), or its arrival date when
  that is missing or unparseable; ties go to the lower message number.

Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

__all__ = [
    "Node",
    "Threadable",
    "format_threads",
    "message_ids",
    "orderedsubject",
    "parent_chain",
    "references",
]

_MSGID = re.compile(rb"<([^<>]*)>")


def message_ids(raw: bytes | None) -> list[str]:
    """The valid ``<id-left@id-right>`` message ids in a header value, in order.

    Blanks and folds inside the brackets are dropped; an id without ``@`` is skipped,
    as Dovecot's message_id_get_next does.
    """
    if not raw:
        return []
    out = []
    for match in _MSGID.finditer(raw):
        text = b"".join(match.group(1).split())
        if b"@" in text and not text.startswith(b"@") and not text.endswith(b"@"):
            out.append(text.decode("utf-8", "replace"))
    return out


@dataclass(frozen=True)
class Threadable:
    """What threading needs of one message.

    ``number``: what the answer names it by (sequence number or UID); messages are
    given in increasing ``number`` order. ``date``: the sort date (seconds).
    """

    number: int
    date: int
    base_subject: str
    is_reply: bool
    message_id: str | None = None
    references: tuple[str, ...] = ()


@dataclass(eq=False)
class Node:
    """A thread tree node; ``message`` None is a dummy (a message not in the set)."""

    message: Threadable | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    def first(self) -> Threadable:
        """The message that stands for this node in sorting: itself or its oldest child."""
        if self.message is not None:
            return self.message
        return min((c.first() for c in self.children), key=_order)

    def add(self, child: Node) -> None:
        child.parent = self
        self.children.append(child)


def _order(message: Threadable) -> tuple[int, int]:
    return (message.date, message.number)


def _sorted(nodes: Iterable[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: _order(n.first()))


# ORDEREDSUBJECT ---------------------------------------------------------------


def orderedsubject(messages: Sequence[Threadable]) -> list[Node]:
    """Group by base subject (sorted by subject, then date); each group is a thread whose
    first message is the parent of all the others; threads ordered by their first date."""
    ordered = sorted(messages, key=lambda m: (m.base_subject, m.date, m.number))
    threads = []
    for _, group in groupby(ordered, key=lambda m: m.base_subject):
        members = list(group)
        root = Node(members[0])
        for member in members[1:]:
            root.add(Node(member))
        threads.append(root)
    return sorted(threads, key=lambda n: _order(n.message))  # type: ignore[arg-type]


# REFERENCES -------------------------------------------------------------------


def _is_ancestor(ancestor: Node, node: Node) -> bool:
    current: Node | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _link(parent: Node, child: Node) -> None:
    """Make parent the parent of child, unless child has one or it would make a loop."""
    if _is_ancestor(child, parent) or child.parent is parent or child.parent is not None:
        return
    parent.add(child)


def _unlink(child: Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _build_links(messages: Sequence[Threadable]) -> list[Node]:
    """Step 1: the id table and its parent/child links; returns every container."""
    table: dict[str, Node] = {}
    containers: list[Node] = []

    def container(message_id: str) -> Node:
        node = table.get(message_id)
        if node is None:
            node = table[message_id] = Node()
            containers.append(node)
        return node

    for message in messages:
        own: Node | None = None
        if message.message_id is not None:
            own = container(message.message_id)
            if own.message is not None:
                own = None  # a duplicate id: this one stands alone
        if own is None:
            own = Node()
            containers.append(own)
        own.message = message
        parent: Node | None = None
        for ref in message.references:
            node = container(ref)
            if parent is not None:
                _link(parent, node)
            parent = node
        if own.parent is not parent:
            _unlink(own)
        if parent is not None:
            _link(parent, own)
    return containers


def _prune(containers: list[Node]) -> list[Node]:
    """Steps 2-3: roots, with dummies dropped (their messages raised to the nearest real
    ancestor, or gathered under the root dummy when there is none)."""
    roots: list[Node] = []
    flat: dict[int, Node] = {}

    def copy(node: Node) -> Node:
        found = flat.get(id(node))
        if found is None:
            found = flat[id(node)] = Node(node.message)
        return found

    for node in containers:
        if node.parent is None:
            roots.append(copy(node))
            continue
        if node.message is None:
            continue
        parent = node.parent
        while parent.message is None and parent.parent is not None:
            parent = parent.parent
        copy(parent).add(copy(node))
    kept = []
    for root in roots:
        if root.message is None:
            if not root.children:
                continue
            if len(root.children) == 1:
                only = root.children[0]
                only.parent = None
                root = only
        kept.append(root)
    return kept


def _merge_by_subject(roots: list[Node]) -> list[Node]:
    """Step 5: threads whose roots share a base subject are gathered together.

    ``roots`` come sorted (step 4); the subject table is filled first (5.B), then each
    root is merged into the thread the table names for its subject (5.C)."""
    info: dict[int, tuple[str, bool]] = {}
    table: dict[str, Node] = {}
    for root in roots:
        first = root.first()
        info[id(root)] = (first.base_subject, first.is_reply)
        subject, reply = info[id(root)]
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (
            held.message is not None and (root.message is None or (info[id(held)][1] and not reply))
        ):
            table[subject] = root
    top = {id(root): root for root in roots}
    for root in roots:
        subject, reply = info[id(root)]
        held = table.get(subject) if subject else None
        if held is None or held is root:
            continue
        del top[id(root)]
        if root.message is None:  # both dummies: the children become siblings
            for child in list(root.children):
                held.add(child)
        elif held.message is None or (reply and not info[id(held)][1]):
            held.add(root)
        else:
            dummy = Node()
            info[id(dummy)] = (subject, False)
            del top[id(held)]
            top[id(dummy)] = dummy
            dummy.add(held)
            dummy.add(root)
            table[subject] = dummy
    return list(top.values())


def parent_chain(references_raw: bytes | None, in_reply_to_raw: bytes | None) -> tuple[str, ...]:
    """The ids a message's parent chain is built from: References, else the first id of
    In-Reply-To (RFC 5256 §2.2 step 1.A)."""
    chain = message_ids(references_raw)
    return tuple(chain) if chain else tuple(message_ids(in_reply_to_raw)[:1])


def references(messages: Sequence[Threadable]) -> list[Node]:
    """The REFERENCES algorithm: threads by message ids, then gathered by subject."""
    roots = _prune(_build_links(messages))
    roots = _merge_by_subject(_sorted(roots))
    return _sorted(roots)


# output -------------------------------------------------------------------------


def _write(nodes: list[Node], root: bool, out: list[str]) -> None:
    nodes = _sorted(nodes)
    if len(nodes) == 1 and not root:
        node = nodes[0]
        assert node.message is not None
        out.append(str(node.message.number))
        if node.children:
            out.append(" ")
            _write(node.children, False, out)
        return
    for node in nodes:
        if not node.children:
            if node.message is not None:
                out.append(f"({node.message.number})")
            continue
        out.append("(")
        if node.message is not None:
            out.append(f"{node.message.number} ")
        _write(node.children, False, out)
        out.append(")")


def format_threads(threads: list[Node]) -> bytes:
    """The ``thread-list`` of a THREAD response (empty when there are no messages)."""
    out: list[str] = []
    _write(threads, True, out)
    return "".join(out).encode("ascii")
