"""Client-side wire form of commands (what the proxy sends upstream).

``format_command`` returns the command split where a synchronizing literal
must wait for the server's ``+``: send element 0, wait for ``+``, send
element 1, and so on. With LITERAL+ every literal is ``{n+}`` and the list has
one element. The choice comes from the upstream's capabilities, never from
what the downstream client happened to use.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import _commands as c
from ._dates import format_datetime
from ._search import criteria_values
from ._values import Atom, Raw, Value, quote_safe

__all__ = ["command_values", "format_append_start", "format_command"]


def _text(s: str) -> bytes:
    return s.encode("utf-8")


def _atoms(items: tuple[str, ...]) -> tuple[Value, ...]:
    return tuple(Atom(i) for i in items)


def _uid(cmd: Any, name: str) -> list[Value]:
    return [Atom("UID"), Atom(name)] if cmd.uid else [Atom(name)]


def command_values(cmd: c.Command) -> list[Value]:
    """The values after the tag, as the client writes them."""
    if isinstance(
        cmd,
        (
            c.Capability,
            c.Noop,
            c.Logout,
            c.StartTLS,
            c.Idle,
            c.Check,
            c.Close,
            c.Unselect,
            c.Namespace,
        ),
    ):
        return [Atom(type(cmd).__name__.upper())]
    if isinstance(cmd, c.Expunge):
        if cmd.uids is None:
            return [Atom("EXPUNGE")]
        return [Atom("UID"), Atom("EXPUNGE"), Atom(str(cmd.uids))]
    if isinstance(cmd, c.Login):
        return [Atom("LOGIN"), cmd.username, cmd.password]
    if isinstance(cmd, c.Authenticate):
        out: list[Value] = [Atom("AUTHENTICATE"), Atom(cmd.mechanism)]
        if cmd.initial_response is not None:
            out.append(Atom(cmd.initial_response.decode("ascii")))
        return out
    if isinstance(cmd, c.Id):
        if cmd.params is None:
            return [Atom("ID"), Atom("NIL")]
        flat: list[Value] = []
        for key, val in cmd.params:
            flat += [key, Atom("NIL") if val is None else val]
        return [Atom("ID"), tuple(flat)]
    if isinstance(cmd, c.Enable):
        return [Atom("ENABLE"), *_atoms(cmd.capabilities)]
    if isinstance(cmd, c.Select):
        out = [Atom("EXAMINE" if cmd.readonly else "SELECT"), _text(cmd.mailbox)]
        params: list[Value] = []
        if cmd.condstore:
            params.append(Atom("CONDSTORE"))
        if cmd.qresync is not None:
            uidvalidity, modseq, known, match = cmd.qresync
            q: list[Value] = [Atom(str(uidvalidity)), Atom(str(modseq))]
            if known is not None:
                q.append(Atom(str(known)))
            if match is not None:
                q.append((Atom(str(match[0])), Atom(str(match[1]))))
            params += [Atom("QRESYNC"), tuple(q)]
        if params:
            out.append(tuple(params))
        return out
    if isinstance(cmd, c.Create):
        out = [Atom("CREATE"), _text(cmd.mailbox)]
        if cmd.special_use:
            out.append((Atom("USE"), _atoms(cmd.special_use)))
        return out
    if isinstance(cmd, (c.Delete, c.Subscribe, c.Unsubscribe)):
        return [Atom(type(cmd).__name__.upper()), _text(cmd.mailbox)]
    if isinstance(cmd, c.Rename):
        return [Atom("RENAME"), _text(cmd.old), _text(cmd.new)]
    if isinstance(cmd, c.List):
        if cmd.lsub:
            return [Atom("LSUB"), _text(cmd.reference), _text(cmd.patterns[0])]
        out = [Atom("LIST")]
        if cmd.select_options or cmd.extended:
            out.append(_atoms(cmd.select_options))
        out.append(_text(cmd.reference))
        if len(cmd.patterns) == 1:
            out.append(_text(cmd.patterns[0]))
        else:
            out.append(tuple(_text(p) for p in cmd.patterns))
        if cmd.return_options:
            ret: list[Value] = []
            for opt in cmd.return_options:
                if isinstance(opt, tuple):
                    ret += [Atom(opt[0]), _atoms(opt[1])]
                else:
                    ret.append(Atom(opt))
            out += [Atom("RETURN"), tuple(ret)]
        return out
    if isinstance(cmd, c.Status):
        return [Atom("STATUS"), _text(cmd.mailbox), _atoms(cmd.items)]
    if isinstance(cmd, c.Search):
        out = _uid(cmd, "SEARCH")
        if cmd.return_options is not None:
            out += [Atom("RETURN"), _atoms(cmd.return_options)]
        if cmd.charset is not None:
            out += [Atom("CHARSET"), _text(cmd.charset)]
        return out + criteria_values(cmd.criteria)
    if isinstance(cmd, c.Fetch):
        out = _uid(cmd, "FETCH")
        out += [Atom(str(cmd.sequence_set)), tuple(Atom(a.command_name()) for a in cmd.attributes)]
        mods: list[Value] = []
        if cmd.changedsince is not None:
            mods += [Atom("CHANGEDSINCE"), Atom(str(cmd.changedsince))]
        if cmd.vanished:
            mods.append(Atom("VANISHED"))
        if mods:
            out.append(tuple(mods))
        return out
    if isinstance(cmd, c.Store):
        out = _uid(cmd, "STORE")
        out.append(Atom(str(cmd.sequence_set)))
        if cmd.unchangedsince is not None:
            out.append((Atom("UNCHANGEDSINCE"), Atom(str(cmd.unchangedsince))))
        out.append(Atom(cmd.mode + "FLAGS" + (".SILENT" if cmd.silent else "")))
        out.append(_atoms(cmd.flags))
        return out
    if isinstance(cmd, (c.Copy, c.Move)):
        out = _uid(cmd, type(cmd).__name__.upper())
        return out + [Atom(str(cmd.sequence_set)), _text(cmd.mailbox)]
    raise TypeError(f"not a command: {type(cmd).__name__}")


class _Writer:
    """Collects output, starting a new element after each sync literal marker."""

    def __init__(self, literal_plus: bool) -> None:
        self.literal_plus = literal_plus
        self.elements: list[list[bytes]] = [[]]

    def write(self, data: bytes) -> None:
        self.elements[-1].append(data)

    def value(self, v: Value) -> None:
        if isinstance(v, bytes):
            if quote_safe(v):
                self.write(b'"' + v.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
            elif self.literal_plus:
                self.write(b"{%d+}\r\n" % len(v))
                self.write(v)
            else:
                self.write(b"{%d}\r\n" % len(v))
                self.elements.append([v])
        elif isinstance(v, tuple):
            self.write(b"(")
            for i, item in enumerate(v):
                if i:
                    self.write(b" ")
                self.value(item)
            self.write(b")")
        elif isinstance(v, Atom):
            self.write(v.value.encode("utf-8"))
        elif isinstance(v, Raw):
            self.write(v.data)
        elif v is None:
            self.write(b"NIL")
        elif isinstance(v, int):
            self.write(b"%d" % v)
        else:
            raise TypeError(f"not an IMAP value: {type(v).__name__}")

    def result(self) -> list[bytes]:
        return [b"".join(e) for e in self.elements]


def format_command(cmd: c.Command, literal_plus: bool) -> list[bytes]:
    """Wire form of ``cmd``; split after each ``{n}`` that needs a ``+``."""
    w = _Writer(literal_plus)
    w.write(cmd.tag.encode("ascii"))
    for v in command_values(cmd):
        w.write(b" ")
        w.value(v)
    w.write(b"\r\n")
    return w.result()


def format_append_start(
    tag: str,
    mailbox: str,
    flags: tuple[str, ...] | None,
    internal_date: datetime.datetime | None,
    size: int,
    literal_plus: bool,
    binary: bool = False,
) -> bytes:
    """``tag APPEND mailbox [(flags)] ["date-time"] {size}`` + CRLF.

    The caller then writes the message (after ``+`` unless ``literal_plus``)
    and a final CRLF. ValueError if the mailbox name itself would need a
    synchronizing literal (non-ASCII without LITERAL+).
    """
    w = _Writer(literal_plus)
    w.write(tag.encode("ascii") + b" APPEND ")
    w.value(_text(mailbox))
    if flags is not None:
        w.write(b" ")
        w.value(_atoms(flags))
    if internal_date is not None:
        w.write(b' "' + format_datetime(internal_date).encode("ascii") + b'"')
    plus = b"+" if literal_plus else b""
    w.write(b" " + (b"~" if binary else b"") + b"{%d%s}\r\n" % (size, plus))
    parts = w.result()
    if len(parts) != 1:
        raise ValueError("mailbox name needs a synchronizing literal")
    return parts[0]
