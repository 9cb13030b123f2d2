"""LIST/LSUB answers computed from the replica's folder tree (RFC 3501 §6.3.8-9, RFC 9051).

The replica keeps every mailbox the upstream listed (and those created here, also
offline), so the proxy answers LIST itself: from the same tree online and offline.
The rules follow RFC 3501 and what Dovecot answers:

* The reference and the pattern are concatenated;
  ``*`` matches anything, ``%`` anything but the delimiter.  Names compare exactly,
  except that INBOX (and the INBOX part of ``INBOX/child``) matches in any case.
* A level of hierarchy that holds mailboxes but is not one itself is listed as
  ``\\Noselect`` (Dovecot's maildir++ answers the same); ``\\HasChildren`` and
  ``\\HasNoChildren`` are computed from the tree, so they stay right after a CREATE
  or DELETE made offline.
* LSUB lists the subscribed names; when ``%`` stops at a level above a subscribed name
  that is not subscribed itself, that level is listed with ``\\Noselect`` (§6.3.9).
* Extended LIST (RFC 5258: selection or return options, or several patterns) answers
  as Dovecot does: a level that is not a mailbox is ``\\NonExistent``; child and
  special-use attributes only when asked for (RETURN CHILDREN / SPECIAL-USE);
  ``\\Subscribed`` with SUBSCRIBED; RECURSIVEMATCH adds ``CHILDINFO`` to a listed name
  that has a descendant meeting the selection (§3.5).

Nothing here does I/O; the handler turns the rows into responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_CHILD_INFO = frozenset({"\\HASCHILDREN", "\\HASNOCHILDREN"})
_NOSELECT = "\\Noselect"


@dataclass(frozen=True)
class Folder:
    """What LIST needs to know about one mailbox of the replica."""

    name: str
    delimiter: str | None
    attributes: tuple[str, ...]
    subscribed: bool


@dataclass(frozen=True)
class Row:
    """One LIST/LSUB response: attributes, delimiter, name."""

    attributes: tuple[str, ...]
    delimiter: str | None
    name: str
    #: RFC 5258 CHILDINFO: the selection criteria a descendant of this name meets.
    child_info: tuple[str, ...] = ()
    #: Whether the name is a mailbox (not a level or a subscription without one).
    exists: bool = True


def join(reference: str, pattern: str) -> str:
    """The reference and the pattern as one pattern: Dovecot simply concatenates them
    (``parent/`` + ``/%`` is ``parent//%``, which matches nothing)."""
    return reference + pattern


def root(reference: str, delimiter: str) -> str:
    """The hierarchy root ``LIST ref ""`` names: the reference's first level with its
    delimiter (``parent/child/`` gives ``parent/``), empty when it has no delimiter."""
    cut = reference.find(delimiter) if delimiter else -1
    return reference[: cut + len(delimiter)] if cut >= 0 else ""


@lru_cache(maxsize=256)
def _regex(pattern: str, delimiter: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(delimiter)}]*" if delimiter else ".*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def matches(name: str, pattern: str, delimiter: str) -> bool:
    """Whether a mailbox name (INBOX spelled upper case) matches a joined LIST pattern.

    INBOX is case-insensitive (RFC 3501 §5.1): ``inbox``, ``InBoX*`` and ``inbox/%``
    reach INBOX and its children; every other name compares exactly.
    """
    if _regex(pattern, delimiter).fullmatch(name) is not None:
        return True
    under_inbox = name == "INBOX" or (bool(delimiter) and name.startswith("INBOX" + delimiter))
    if not under_inbox or pattern[:5].upper() != "INBOX" or pattern[:5] == "INBOX":
        return False
    return _regex("INBOX" + pattern[5:], delimiter).fullmatch(name) is not None


def _ancestors(name: str, delimiter: str) -> list[str]:
    if not delimiter:
        return []
    parts = name.split(delimiter)
    return [delimiter.join(parts[:i]) for i in range(1, len(parts)) if parts[i - 1]]


def _with_child_info(attributes: tuple[str, ...], has_children: bool) -> tuple[str, ...]:
    kept = [a for a in attributes if a.upper() not in _CHILD_INFO]
    if any(a.upper() == "\\NOINFERIORS" for a in kept):
        return tuple(kept)
    flags = [a for a in kept if a.upper() in ("\\NOSELECT", "\\NONEXISTENT", "\\MARKED")]
    rest = [a for a in kept if a not in flags]
    child = "\\HasChildren" if has_children else "\\HasNoChildren"
    return (*flags, child, *rest)


def list_rows(
    folders: Iterable[Folder], patterns: Iterable[str], default_delimiter: str
) -> list[Row]:
    """LIST: the mailboxes and hierarchy levels matching any of the joined patterns."""
    pats = list(patterns)
    by_name = {f.name: f for f in folders}
    parents: set[str] = set()
    virtual: dict[str, str] = {}
    for folder in by_name.values():
        delimiter = folder.delimiter or ""
        for ancestor in _ancestors(folder.name, delimiter):
            parents.add(ancestor)
            if ancestor not in by_name:
                virtual.setdefault(ancestor, delimiter)
    rows: list[Row] = []
    for folder in by_name.values():
        delimiter = folder.delimiter or ""
        if any(matches(folder.name, pat, delimiter) for pat in pats):
            attributes = _with_child_info(folder.attributes, folder.name in parents)
            rows.append(Row(attributes, folder.delimiter, folder.name))
    for name, delimiter in sorted(virtual.items()):
        if any(matches(name, pat, delimiter) for pat in pats):
            rows.append(Row((_NOSELECT, "\\HasChildren"), delimiter or default_delimiter, name))
    return rows


def lsub_rows(folders: Iterable[Folder], patterns: Iterable[str]) -> list[Row]:
    """LSUB: subscribed names matching, and unsubscribed levels that ``%`` stops at."""
    pats = list(patterns)
    subscribed = {f.name: f for f in folders if f.subscribed}
    rows: list[Row] = []
    seen: set[str] = set()
    for folder in subscribed.values():
        delimiter = folder.delimiter or ""
        hit = [pat for pat in pats if matches(folder.name, pat, delimiter)]
        if hit:
            # A subscription whose mailbox is gone is listed with no attribute, as
            # Dovecot answers (RFC 3501 §6.3.9 lists it all the same).
            attributes = tuple(
                a
                for a in folder.attributes
                if a.upper() not in _CHILD_INFO and a.upper() != "\\NONEXISTENT"
            )
            rows.append(Row(attributes, folder.delimiter, folder.name))
            seen.add(folder.name)
    for folder in subscribed.values():
        delimiter = folder.delimiter or ""
        missed = [pat for pat in pats if not matches(folder.name, pat, delimiter)]
        for ancestor in _ancestors(folder.name, delimiter):
            if ancestor in subscribed or ancestor in seen:
                continue
            if any(matches(ancestor, pat, delimiter) for pat in missed):
                rows.append(Row((_NOSELECT,), folder.delimiter, ancestor))
                seen.add(ancestor)
    return rows


SPECIAL_USE = frozenset(
    {"\\ALL", "\\ARCHIVE", "\\DRAFTS", "\\FLAGGED", "\\JUNK", "\\SENT", "\\TRASH", "\\IMPORTANT"}
)
_NONEXISTENT = "\\NonExistent"


@dataclass(frozen=True)
class ListOptions:
    """The RFC 5258 options of one LIST, upper-cased as parsed."""

    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()

    @property
    def subscribed(self) -> bool:
        return "SUBSCRIBED" in self.select

    @property
    def special_use(self) -> bool:
        return "SPECIAL-USE" in self.select

    @property
    def recursive(self) -> bool:
        return "RECURSIVEMATCH" in self.select

    def criteria(self) -> tuple[str, ...]:
        """The selection criteria CHILDINFO names, in RFC order."""
        return tuple(c for c in ("SUBSCRIBED", "SPECIAL-USE") if c in self.select)


def check_options(options: ListOptions) -> str | None:
    """Why the options are refused (BAD), or None. RECURSIVEMATCH needs another
    selection option besides REMOTE (RFC 5258 §3.1)."""
    known_select = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
    unknown = options.select - known_select
    if unknown:
        return f"unknown LIST selection option {sorted(unknown)[0]}"
    unknown = options.returns - {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}
    if unknown:
        return f"unknown LIST return option {sorted(unknown)[0]}"
    if options.recursive and not options.select - {"REMOTE", "RECURSIVEMATCH"}:
        return "RECURSIVEMATCH must not be the only selection option"
    return None


def _is_special(attributes: Iterable[str]) -> bool:
    return any(a.upper() in SPECIAL_USE for a in attributes)


def extended_rows(
    folders: Iterable[Folder],
    patterns: Iterable[str],
    default_delimiter: str,
    options: ListOptions,
) -> list[Row]:
    """Extended LIST: the names matching any pattern that meet the selection criteria
    (or, with RECURSIVEMATCH, have a descendant that does), with the attributes the
    return options ask for."""
    pats = list(patterns)
    by_name = {f.name: f for f in folders}
    levels: dict[str, str] = {}
    children: set[str] = set()
    for folder in by_name.values():
        for ancestor in _ancestors(folder.name, folder.delimiter or ""):
            children.add(ancestor)
            levels.setdefault(ancestor, folder.delimiter or default_delimiter)
    #: Subscriptions whose mailbox is gone: only a SUBSCRIBED selection lists them.
    orphans: dict[str, str] = {}
    for name, folder in list(by_name.items()):
        # A \Noselect level the upstream listed is no mailbox: \NonExistent here, as
        # Dovecot answers (RFC 5258 §3.4: \NonExistent implies \Noselect).
        upper = {a.upper() for a in folder.attributes}
        if "\\NONEXISTENT" in upper or ("\\NOSELECT" in upper and name in children):
            del by_name[name]
            if "\\NONEXISTENT" in upper and folder.subscribed and options.subscribed:
                orphans[name] = folder.delimiter or default_delimiter
    levels = {name: d for name, d in levels.items() if name not in by_name}

    def meets(folder: Folder) -> bool:
        if options.subscribed and not folder.subscribed:
            return False
        return not options.special_use or _is_special(folder.attributes)

    selected = {name for name, folder in by_name.items() if meets(folder)} | set(orphans)
    if not options.subscribed and not options.special_use:
        selected |= set(levels)  # a level meets no criteria but "exists or not"

    def delimiter_of(name: str) -> str:
        known = by_name.get(name)
        return (known.delimiter if known else levels.get(name, orphans.get(name))) or ""

    def listed(name: str) -> bool:
        return any(matches(name, pat, delimiter_of(name)) for pat in pats)

    # RECURSIVEMATCH: the names with a descendant meeting the criteria, and those with
    # one that is not listed itself (only they are worth a row of their own, §3.5).
    with_child_meeting: set[str] = set()
    with_child_unlisted: set[str] = set()
    if options.recursive:
        for name in selected:
            ancestors = _ancestors(name, delimiter_of(name))
            with_child_meeting.update(ancestors)
            if not listed(name):
                with_child_unlisted.update(ancestors)
    rows: list[Row] = []
    for name in sorted(set(by_name) | set(levels) | set(orphans)):
        found = by_name.get(name)
        row_delimiter = found.delimiter if found is not None else delimiter_of(name)
        if not listed(name):
            continue
        if name in selected:
            child_info = options.criteria() if name in with_child_meeting else ()
        elif name in with_child_unlisted:
            child_info = options.criteria()
        else:
            continue
        attributes = _extended_attributes(found, name in children, options)
        if name in orphans:
            attributes = ("\\Subscribed", *attributes)
        rows.append(
            Row(
                attributes,
                row_delimiter,
                name,
                child_info,
                exists=found is not None,
            )
        )
    return rows


def _extended_attributes(
    folder: Folder | None, has_children: bool, options: ListOptions
) -> tuple[str, ...]:
    out: list[str] = []
    if folder is None:
        out.append(_NONEXISTENT)
        attributes: tuple[str, ...] = ()
    else:
        attributes = folder.attributes
        if folder.subscribed and ("SUBSCRIBED" in options.returns or options.subscribed):
            out.append("\\Subscribed")
    no_inferiors = any(a.upper() == "\\NOINFERIORS" for a in attributes)
    special = "SPECIAL-USE" in options.returns or options.special_use
    for attribute in attributes:
        upper = attribute.upper()
        if upper in _CHILD_INFO or upper == "\\SUBSCRIBED":
            continue
        if upper in SPECIAL_USE and not special:
            continue
        out.append(attribute)
    if "CHILDREN" in options.returns and not no_inferiors:
        out.append("\\HasChildren" if has_children else "\\HasNoChildren")
    return tuple(out)
