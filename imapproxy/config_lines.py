"""Where each key of a TOML file is written: the line numbers ``tomllib`` does not give.

``tomllib`` reports the line of a syntax error, but once a file parses, its values carry
no position, so a semantic error ("port out of range", "unknown key") could not name
its line. This module scans the text (already known to be valid TOML) for table headers
and ``key =`` lines and maps every key path to the line it is on.

A key path is what the parsed document is indexed with: ``("upstream", 1, "url")`` is
the ``url`` of the second ``[[upstream]]``. Paths the scan cannot see (a key inside an
inline table, an array element) are looked up by their nearest written ancestor, so
an error still lands on the line that holds it. Multi-line strings and arrays are
skipped, so text inside them is never mistaken for a key.
"""

from __future__ import annotations

import re
import tomllib

KeyPath = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_KEY_LINE = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_PART = re.compile(_KEY)


def _parts(dotted: str) -> list[str]:
    """The components of a dotted key, unquoted."""
    parts = []
    for token in _PART.findall(dotted):
        if token.startswith('"'):
            parts.append(tomllib.loads(f"k = {token}")["k"])
        elif token.startswith("'"):
            parts.append(token[1:-1])
        else:
            parts.append(token)
    return parts


class KeyLines:
    """Line numbers (1-based) of the keys and tables of one TOML text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._scan(text)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    def _note(self, path: KeyPath, number: int) -> None:
        self._lines.setdefault(path, number)

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        arrays: dict[KeyPath, int] = {}  # array-of-tables path -> index of its last table
        scanner = _ValueScanner()
        for number, line in enumerate(text.splitlines(), start=1):
            if scanner.inside:
                scanner.feed(line)
                continue
            header = _HEADER.match(line)
            if header is not None:
                table = self._header(header, arrays, number)
                continue
            key = _KEY_LINE.match(line)
            if key is not None:
                path = table
                for part in _parts(key.group(1)):
                    path = (*path, part)
                    self._note(path, number)
                scanner.feed(line[key.end() :])

    def _header(self, match: re.Match[str], arrays: dict[KeyPath, int], number: int) -> KeyPath:
        names = _parts(match.group(2))
        path: KeyPath = ()
        for name in names[:-1]:
            path = (*path, name)
            if path in arrays:
                path = (*path, arrays[path])
        path = (*path, names[-1])
        if match.group(1) == "[[":
            arrays[path] = arrays.get(path, -1) + 1
            self._note(path, number)
            path = (*path, arrays[path])
        elif path in arrays:  # [a.b] where a.b is an array of tables: its last table
            path = (*path, arrays[path])
        self._note(path, number)
        return path


class _ValueScanner:
    """Follows a value across lines: open brackets and multi-line strings."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None  # the closing delimiter we are inside of

    @property
    def inside(self) -> bool:
        return self.depth > 0 or self.multiline is not None

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self.multiline is not None:
                end = text.find(self.multiline, i)
                if end < 0:
                    return
                i = end + 3
                self.multiline = None
                continue
            char = text[i]
            if char == "#":
                return
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.multiline = text[i : i + 3]
                i += 3
            elif char == '"':
                i = _skip_basic_string(text, i + 1)
            elif char == "'":
                end = text.find("'", i + 1)
                i = len(text) if end < 0 else end + 1
            else:
                if char in "[{":
                    self.depth += 1
                elif char in "]}":
                    self.depth = max(0, self.depth - 1)
                i += 1


def _skip_basic_string(text: str, i: int) -> int:
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return i
