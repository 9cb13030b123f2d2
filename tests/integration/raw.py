"""A bare IMAP client for tests that compare exact responses (RECENT, FLAGS, VANISHED).

imaplib and imapclient hide or merge untagged responses, and neither speaks CONDSTORE
or QRESYNC; this one sends a line and returns every line of the answer as text, with
literals folded in, so a test can look at what a client actually receives.
"""

from __future__ import annotations

import itertools
import re
import socket
from types import TracebackType
from typing import Self

TIMEOUT = 30
_LITERAL = re.compile(rb"\{(\d+)\}\r\n\Z")
_MESSAGE = b"From: a@example.org\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\nhello\r\n"


class RawClient:
    def __init__(self, host: str, port: int, user: str | None = None, password: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self._line()
        self._tags = itertools.count(1)
        if user is not None:
            self.ok(f'LOGIN "{user}" "{password}"')

    def _line(self) -> str:
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(f"connection closed after {out!r}")
            out += line
            literal = _LITERAL.search(line)
            if literal is None:
                return out.rstrip(b"\r\n").decode("utf-8", "replace")
            out += self.file.read(int(literal.group(1)))

    def command(self, text: str) -> tuple[list[str], str]:
        """(untagged lines, tagged line) of one command."""
        tag = f"t{next(self._tags)}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        untagged: list[str] = []
        while True:
            line = self._line()
            if line.startswith(tag + " "):
                return untagged, line[len(tag) + 1 :]
            untagged.append(line)

    def ok(self, text: str) -> list[str]:
        untagged, tagged = self.command(text)
        assert tagged.startswith("OK"), (text, untagged, tagged)
        return untagged

    def append(self, mailbox: str, subject: str, flags: str = "") -> None:
        data = _MESSAGE % (subject.encode(), subject.encode())
        flag_list = f"({flags}) " if flags else ""
        tag = f"t{next(self._tags)}"
        self.sock.sendall(f'{tag} APPEND "{mailbox}" {flag_list}{{{len(data)}+}}\r\n'.encode())
        self.sock.sendall(data + b"\r\n")
        while True:
            line = self._line()
            if line.startswith(tag + " "):
                assert line[len(tag) + 1 :].startswith("OK"), line
                return

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (OSError, EOFError):
            pass
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def numbers(lines: list[str], name: str) -> list[int]:
    """``* n NAME`` lines' numbers (EXISTS, RECENT, EXPUNGE), in order."""
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "*" and parts[2].upper() == name:
            found.append(int(parts[1]))
    return found


def search_hits(lines: list[str]) -> list[int]:
    for line in lines:
        if line.upper().startswith("* SEARCH"):
            return [int(n) for n in line.split()[2:]]
    raise AssertionError(f"no SEARCH response in {lines}")


def fetch_flags(lines: list[str]) -> dict[int, set[str]]:
    """Sequence number -> flags of each ``* n FETCH (... FLAGS (...) ...)`` line."""
    out = {}
    for line in lines:
        match = re.match(r"\* (\d+) FETCH .*FLAGS \(([^)]*)\)", line)
        if match:
            out[int(match.group(1))] = set(match.group(2).split())
    return out


def flags_line(lines: list[str]) -> set[str] | None:
    for line in lines:
        match = re.match(r"\* FLAGS \(([^)]*)\)", line)
        if match:
            return set(match.group(1).split())
    return None
