"""Build command dataclasses from a lexed command line.

The reader lexes the whole command (literals folded in) into values first;
here each command's grammar is checked against those values. Errors are
ParseError carrying the tag, which the reader turns into a CommandError.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from . import _commands as c
from ._args import Args, astring_str
from ._dates import parse_datetime
from ._errors import ParseError
from ._fetch import FETCH_MACROS, FetchAttribute, parse_fetch_attribute
from ._search import parse_search_keys
from ._seqset import SequenceSet
from ._sort_thread import parse_compress, parse_sort, parse_thread
from ._values import Atom, Value

__all__ = [
    "KNOWN_COMMANDS",
    "AppendPrefix",
    "parse_append_more",
    "parse_append_prefix",
    "parse_command",
    "parse_tag",
]

_TAG = re.compile(r"[!#$&\',-\[\]-z|}~]+\Z")

AppendPrefix = tuple[str, tuple[str, ...] | None, datetime.datetime | None]


def parse_tag(value: Value) -> str | None:
    """The tag if ``value`` is a valid one (any ASTRING-CHAR except ``+``)."""
    if isinstance(value, Atom) and _TAG.match(value.value):
        return value.value
    return None


def _no_args(cls: Callable[[str], Any]) -> Callable[[str, Args], Any]:
    def parse(tag: str, args: Args) -> Any:
        args.end()
        return cls(tag)

    return parse


def _flag_list(value: Value) -> tuple[str, ...]:
    if not isinstance(value, tuple):
        raise ParseError("expected flag list")
    flags = []
    for f in value:
        if not isinstance(f, Atom):
            raise ParseError("invalid flag")
        flags.append(f.value)
    return tuple(flags)


def _login(tag: str, args: Args) -> c.Login:
    user = args.astring("user name")
    password = args.astring("password")
    args.end()
    return c.Login(tag, user, password)


def _authenticate(tag: str, args: Args) -> c.Authenticate:
    mech = args.atom("mechanism").upper()
    ir = None
    if not args.at_end():
        ir = args.atom("initial response").encode("ascii", "replace")
    args.end()
    return c.Authenticate(tag, mech, ir)


def _id(tag: str, args: Args) -> c.Id:
    value = args.next("ID parameters")
    args.end()
    if isinstance(value, Atom) and value.value.upper() == "NIL":
        return c.Id(tag, None)
    if not isinstance(value, tuple) or len(value) % 2:
        raise ParseError("invalid ID parameters")
    inner = Args(list(value))
    params = []
    while not inner.at_end():
        key = inner.next()
        if not isinstance(key, bytes):
            raise ParseError("ID field names must be strings")
        params.append((key, inner.string_or_nil("ID value")))
    return c.Id(tag, tuple(params))


def _enable(tag: str, args: Args) -> c.Enable:
    caps = []
    while not args.at_end():
        caps.append(args.atom("capability").upper())
    if not caps:
        raise ParseError("missing capability")
    return c.Enable(tag, tuple(caps))


def _qresync(value: Value) -> c.QResync:
    if not isinstance(value, tuple):
        raise ParseError("invalid QRESYNC parameters")
    args = Args(list(value))
    uidvalidity = args.number("UIDVALIDITY")
    modseq = args.number("mod-sequence")
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if not args.at_end() and not isinstance(args.peek(), tuple):
        known = args.sequence_set()
    if not args.at_end():  # RFC 7162: seq-match-data may come without known-uids
        pair = Args(list(args.list("sequence match data")))
        match = (pair.sequence_set(), pair.sequence_set())
        pair.end()
    args.end()
    return (uidvalidity, modseq, known, match)


def _select(readonly: bool) -> Callable[[str, Args], c.Select]:
    def parse(tag: str, args: Args) -> c.Select:
        mailbox = args.mailbox()
        condstore = False
        qresync = None
        if not args.at_end():
            params = Args(list(args.list("select parameters")))
            while not params.at_end():
                name = params.atom("select parameter").upper()
                if name == "CONDSTORE":
                    condstore = True
                elif name == "QRESYNC":
                    qresync = _qresync(params.next("QRESYNC parameters"))
                else:
                    raise ParseError("unknown select parameter")
        args.end()
        return c.Select(tag, mailbox, readonly, condstore, qresync)

    return parse


def _create(tag: str, args: Args) -> c.Create:
    mailbox = args.mailbox()
    use: tuple[str, ...] = ()
    if not args.at_end():
        params = Args(list(args.list("create parameters")))
        while not params.at_end():
            if params.atom("create parameter").upper() != "USE":
                raise ParseError("unknown create parameter")
            use += _flag_list(params.next("special-use list"))
    args.end()
    return c.Create(tag, mailbox, use)


def _one_mailbox(cls: Callable[[str, str], Any]) -> Callable[[str, Args], Any]:
    def parse(tag: str, args: Args) -> Any:
        mailbox = args.mailbox()
        args.end()
        return cls(tag, mailbox)

    return parse


def _rename(tag: str, args: Args) -> c.Rename:
    old = args.mailbox()
    new = args.mailbox()
    args.end()
    return c.Rename(tag, old, new)


def _atoms_upper(value: Value, what: str) -> tuple[str, ...]:
    if not isinstance(value, tuple):
        raise ParseError(f"expected {what}")
    out = []
    for v in value:
        if not isinstance(v, Atom):
            raise ParseError(f"invalid {what}")
        out.append(v.value.upper())
    return tuple(out)


def _list(tag: str, args: Args) -> c.List:
    select: tuple[str, ...] = ()
    extended = False
    if isinstance(args.peek(), tuple):
        select = _atoms_upper(args.next(), "selection options")
        extended = True
    reference = args.mailbox()
    pat = args.next("mailbox pattern")
    if isinstance(pat, tuple):
        if not pat:
            raise ParseError("empty list of mailbox patterns")
        patterns = tuple(astring_str(p, "mailbox pattern") for p in pat)
        extended = True
    else:
        patterns = (astring_str(pat, "mailbox pattern"),)
    ret: list[Any] = []
    if not args.at_end():
        extended = True
        if args.atom("RETURN").upper() != "RETURN":
            raise ParseError("expected RETURN")
        opts = Args(list(args.list("return options")))
        while not opts.at_end():
            name = opts.atom("return option").upper()
            if name == "STATUS":
                ret.append(("STATUS", _atoms_upper(opts.next("status items"), "status items")))
            else:
                ret.append(name)
    args.end()
    return c.List(tag, reference, patterns, select, tuple(ret), extended=extended)


def _lsub(tag: str, args: Args) -> c.List:
    reference = args.mailbox()
    pattern = astring_str(args.next("mailbox pattern"), "mailbox pattern")
    args.end()
    return c.List(tag, reference, (pattern,), lsub=True)


def _status(tag: str, args: Args) -> c.Status:
    mailbox = args.mailbox()
    items = _atoms_upper(args.next("status items"), "status items")
    args.end()
    return c.Status(tag, mailbox, items)


def _search(tag: str, uid: bool, args: Args) -> c.Search:
    ret: tuple[str, ...] | None = None
    charset = None
    if args.peek_atom() == "RETURN":
        args.next()
        ret = _atoms_upper(args.next("return options"), "return options")
    if args.peek_atom() == "CHARSET":
        args.next()
        charset = astring_str(args.next("charset"), "charset")
    criteria = parse_search_keys(args.values[args.pos :])
    return c.Search(tag, uid, charset, criteria, ret)


def _fetch(tag: str, uid: bool, args: Args) -> c.Fetch:
    seqset = args.sequence_set()
    spec = args.next("fetch attributes")
    attrs: tuple[FetchAttribute, ...]
    if isinstance(spec, Atom) and spec.value.upper() in FETCH_MACROS:
        attrs = FETCH_MACROS[spec.value.upper()]
    elif isinstance(spec, Atom):
        attrs = (parse_fetch_attribute(spec.value),)
    elif isinstance(spec, tuple) and spec:
        items = []
        for item in spec:
            if not isinstance(item, Atom):
                raise ParseError("invalid fetch attribute")
            items.append(parse_fetch_attribute(item.value))
        attrs = tuple(items)
    else:
        raise ParseError("invalid fetch attributes")
    changedsince = None
    vanished = False
    if not args.at_end():
        mods = Args(list(args.list("fetch modifiers")))
        while not mods.at_end():
            name = mods.atom("fetch modifier").upper()
            if name == "CHANGEDSINCE":
                changedsince = mods.number("mod-sequence")
            elif name == "VANISHED":
                vanished = True
            else:
                raise ParseError("unknown fetch modifier")
    args.end()
    if vanished and (changedsince is None or not uid):
        raise ParseError("VANISHED needs UID FETCH with CHANGEDSINCE")
    return c.Fetch(tag, uid, seqset, attrs, changedsince, vanished)


_STORE_ITEM = re.compile(r"([+-]?)FLAGS(\.SILENT)?\Z", re.IGNORECASE)


def _store(tag: str, uid: bool, args: Args) -> c.Store:
    seqset = args.sequence_set()
    unchangedsince = None
    if isinstance(args.peek(), tuple):
        mods = Args(list(args.list()))
        while not mods.at_end():
            if mods.atom("store modifier").upper() != "UNCHANGEDSINCE":
                raise ParseError("unknown store modifier")
            unchangedsince = mods.number("mod-sequence")
    m = _STORE_ITEM.match(args.atom("store item"))
    if not m:
        raise ParseError("invalid store item")
    if isinstance(args.peek(), tuple):
        flags = _flag_list(args.next())
        args.end()
    else:
        found = []
        while not args.at_end():
            found.append(args.atom("flag"))
        if not found:
            raise ParseError("missing flags")
        flags = tuple(found)
    return c.Store(tag, uid, seqset, m.group(1), bool(m.group(2)), flags, unchangedsince)


def _copy_move(cls: Any) -> Callable[[str, bool, Args], Any]:
    def parse(tag: str, uid: bool, args: Args) -> Any:
        seqset = args.sequence_set()
        mailbox = args.mailbox()
        args.end()
        return cls(tag, uid, seqset, mailbox)

    return parse


def _expunge(tag: str, uid: bool, args: Args) -> c.Expunge:
    uids = args.sequence_set() if uid else None
    args.end()
    return c.Expunge(tag, uids)


_PLAIN: dict[str, Callable[[str, Args], Any]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTLS),
    "IDLE": _no_args(c.Idle),
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "NAMESPACE": _no_args(c.Namespace),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ID": _id,
    "ENABLE": _enable,
    "SELECT": _select(False),
    "EXAMINE": _select(True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "COMPRESS": parse_compress,
}

_UID_CAPABLE: dict[str, Callable[[str, bool, Args], Any]] = {
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move),
    "EXPUNGE": _expunge,
    "SORT": parse_sort,
    "THREAD": parse_thread,
}

KNOWN_COMMANDS = frozenset(_PLAIN) | frozenset(_UID_CAPABLE) | {"APPEND", "UID"}


def parse_command(values: list[Value]) -> c.Command:
    """Parse a lexed command (tag first); ParseError carries the tag if valid."""
    if not values:
        raise ParseError("empty command")
    tag = parse_tag(values[0])
    if tag is None:
        raise ParseError("invalid tag")
    try:
        args = Args(values[1:])
        name = args.atom("command name").upper()
        uid = False
        if name == "UID":
            uid = True
            name = args.atom("command name").upper()
            if name not in _UID_CAPABLE:
                raise ParseError("unknown command")
        if name in _UID_CAPABLE:
            return _UID_CAPABLE[name](tag, uid, args)  # type: ignore[no-any-return]
        if name in _PLAIN:
            return _PLAIN[name](tag, args)  # type: ignore[no-any-return]
        raise ParseError("unknown command")
    except ParseError as exc:
        raise ParseError(exc.reason, tag) from None


def parse_append_prefix(values: list[Value]) -> AppendPrefix:
    """Parse ``mailbox [flags] [date-time]`` of APPEND (the values before the message)."""
    args = Args(values)
    mailbox = args.mailbox()
    return (mailbox, *_append_options(args))


def parse_append_more(
    values: list[Value],
) -> tuple[tuple[str, ...] | None, datetime.datetime | None]:
    """Parse ``[flags] [date-time]`` before a further message of a MULTIAPPEND
    (RFC 3502: ``1*append-message``)."""
    return _append_options(Args(values))


def _append_options(args: Args) -> tuple[tuple[str, ...] | None, datetime.datetime | None]:
    flags = None
    when = None
    if isinstance(args.peek(), tuple):
        flags = _flag_list(args.next())
    if not args.at_end():
        text = args.next("date-time")
        if not isinstance(text, bytes):
            raise ParseError("invalid date-time")
        when = parse_datetime(text.decode("ascii", "replace"))
    args.end()
    return flags, when
