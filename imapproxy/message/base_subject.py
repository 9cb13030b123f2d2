"""The base subject of RFC 5256 §2.1, and the string collation SORT and THREAD use.

Both are what Dovecot 2.3 computes, since a client must get the same order through the
proxy as from the server directly:

* Header text is decoded first: RFC 2047 encoded words become Unicode (the blanks between
  two adjacent encoded words go), raw 8-bit text is taken as UTF-8.
* Every character is then mapped to its (simple) titlecase and decomposed, which is the
  i;unicode-casemap comparator of RFC 5051 and, for ASCII, exactly i;ascii-casemap: keys
  compare by plain code point order afterwards.
* Base-subject extraction then runs on that folded text, so ``Re:``, ``FWD:``, ``[fwd:
  ...]`` and ``(fwd)`` are matched case-insensitively, as RFC 5256 §2.1 steps 2-6 say.

Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from functools import lru_cache

__all__ = ["base_subject", "casemap", "decode_words"]

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_BLANKS = re.compile(r"[ \t\r\n]+")


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    title = char.title()
    if len(title) != 1:
        upper = char.upper()
        title = upper if len(upper) == 1 else char
    return unicodedata.normalize("NFKD", title)


def casemap(text: str) -> str:
    """Titlecase then decompose each character (Dovecot's decomposed titlecase)."""
    if text.isascii():
        return text.upper()
    return "".join(_fold_char(c) for c in text)


def _decode_word(charset: bytes, encoding: bytes, text: bytes) -> str | None:
    name = charset.split(b"*", 1)[0].decode("ascii", "replace")  # RFC 2231 language
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    if encoding in b"Bb":
        try:
            data = base64.b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
    else:
        data = re.sub(
            rb"=([0-9A-Fa-f]{2})",
            lambda m: bytes([int(m.group(1), 16)]),
            text.replace(b"_", b" "),
        )
    return data.decode(name, "replace")


def decode_words(raw: bytes) -> str:
    """Header text with RFC 2047 encoded words decoded; other bytes read as UTF-8."""
    out: list[str] = []
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        decoded = _decode_word(*match.groups())
        if decoded is None:
            out.append(raw[pos : match.end()].decode("utf-8", "replace"))
            last_was_word = False
        else:
            if not (last_was_word and not between.strip(b" \t\r\n")):
                out.append(between.decode("utf-8", "replace"))
            out.append(decoded)
            last_was_word = True
        pos = match.end()
    out.append(raw[pos:].decode("utf-8", "replace"))
    return "".join(out)


def _skip_blob(text: str, pos: int) -> int | None:
    """End of a ``[…]`` blob at pos (and one blank after it), or None."""
    if pos >= len(text) or text[pos] != "[":
        return None
    end = pos + 1
    while end < len(text) and text[end] not in "[]":
        end += 1
    if end >= len(text) or text[end] != "]":
        return None
    end += 1
    if end < len(text) and text[end] == " ":
        end += 1
    return end


def _strip_trailers(text: str, start: int) -> tuple[str, bool]:
    """Step 2: blanks and ``(FWD)`` off the end (never before start)."""
    end = len(text)
    found = False
    while end > start:
        if text[end - 1] == " ":
            end -= 1
        elif end - 5 >= 0 and text[end - 5 : end] == "(FWD)":
            end -= 5
            found = True
        else:
            break
    return text[:end], found


def _strip_leader(text: str, start: int) -> tuple[int, bool, bool]:
    """Step 3: one subj-leader off the front: (new start, removed, was Re/Fwd)."""
    removed = False
    if start < len(text) and text[start] == " ":
        start += 1
        removed = True
    pos = start
    while pos < len(text) and text[pos] == "[":
        after = _skip_blob(text, pos)
        if after is None:
            return start, removed, False
        pos = after
    for word in ("RE", "FWD", "FW"):
        if text.startswith(word, pos):
            pos += len(word)
            break
    else:
        return start, removed, False
    if pos < len(text) and text[pos] == " ":
        pos += 1
    if pos < len(text) and text[pos] == "[":
        after = _skip_blob(text, pos)
        if after is None:
            return start, removed, False
        pos = after
    if pos >= len(text) or text[pos] != ":":
        return start, removed, False
    return pos + 1, True, True


def _strip_fwd_wrapper(text: str, start: int) -> str | None:
    """Step 6: ``[FWD: … ]`` around the rest, or None."""
    if text.startswith("[FWD:", start) and len(text) > start and text.endswith("]"):
        return text[:-1]
    return None


def base_subject(raw: bytes | None) -> tuple[str, bool]:
    """(base subject, whether it was a reply or forward) of a raw Subject value."""
    if not raw:
        return "", False
    text = _BLANKS.sub(" ", casemap(decode_words(raw)))
    start = 0
    reply = False
    while True:
        text, trailer = _strip_trailers(text, start)
        reply = reply or trailer
        while True:
            start, removed, was_reply = _strip_leader(text, start)
            reply = reply or was_reply
            after = _skip_blob(text, start)
            if after is not None and after < len(text):
                start, removed = after, True
            if not removed:
                break
        wrapped = _strip_fwd_wrapper(text, start)
        if wrapped is None:
            break
        text, start, reply = wrapped, start + 5, True
    return text[start:], reply
