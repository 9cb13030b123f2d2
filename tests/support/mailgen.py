"""Deterministic generator of realistic RFC 5322 messages for tests and benchmarks.

A proxy that caches FETCH results has to cope with what real mailboxes contain: MIME trees
of several shapes, RFC 2047 encoded headers in several scripts, threads, binary
attachments and a spread of sizes and dates. Messages are assembled from byte templates
instead of ``email.message`` because it is an order of magnitude faster (10,000 messages
must seed in seconds) and gives exact control over CRLF line endings.
"""

from __future__ import annotations

import base64
import functools
import random
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

CRLF = "\r\n"
DOMAIN = "corpus.imapproxy.test"
START = datetime(2023, 1, 1, 8, 0, tzinfo=UTC)
SPAN = timedelta(days=730)

PEOPLE: tuple[tuple[str, str], ...] = (
    ("Alice Example", "alice@example.org"),
    ("Bob O'Neill", "bob@example.net"),
    ("김민준", "minjun.kim@example.kr"),
    ("이서연", "seoyeon@example.kr"),
    ("Jürgen Müller", "juergen@example.de"),
    ("Björn Größer", "bjoern@example.de"),
    ("Party 🎉 Bot", "party@example.com"),
    ("Chloé Dubois", "chloe@example.fr"),
    ("Support Team", "support@example.com"),
    ("", "noreply@example.com"),
)

SUBJECTS: tuple[str, ...] = (
    "Quarterly report",
    "Lunch tomorrow?",
    "회의 일정 안내",
    "받은 파일 확인 부탁드립니다",
    "Grüße aus München – Übersicht",
    "Größenänderung der Datenbank",
    "🎉 Release party on Friday 🚀",
    "Invoice #2024-117",
    "Re: build failures on main",
    "Ça marche ? Résumé de la réunion",
    "A rather long subject line that goes on and on so that it needs folding across lines",
)

_PROSE = (
    "the proxy caches mailbox state so that clients on slow links see their mail at once "
    "while synchronisation runs in background and conflicts are resolved by uid "
    "Grüße Übermorgen Straße naïve café 안녕하세요 감사합니다 메일 확인 🙂 ✉️"
)
TEXT_WORDS: tuple[str, ...] = tuple(_PROSE.split())


class GeneratedMessage(NamedTuple):
    """One message: raw bytes with CRLF line endings, and IMAP flags to seed it with."""

    raw: bytes
    flags: tuple[str, ...]


def _text_pool() -> str:
    """A fixed block of prose that bodies are sliced from (fast, deterministic)."""
    rng = random.Random(1)
    lines = []
    for _ in range(1200):
        words = [rng.choice(TEXT_WORDS) for _ in range(rng.randint(6, 14))]
        lines.append(" ".join(words).capitalize() + ".")
    return CRLF.join(lines) + CRLF


_POOL = _text_pool()


@functools.lru_cache(maxsize=256)
def encode_word(text: str, encoding: str) -> str:
    """RFC 2047 encode ``text`` as UTF-8 in "B" or "Q" encoding, folded into words <= 75 chars."""
    words: list[str] = []
    chunk = ""
    for char in text:
        candidate = chunk + char
        if len(_encode_chunk(candidate, encoding)) > 75:
            words.append(_encode_chunk(chunk, encoding))
            candidate = char
        chunk = candidate
    if chunk:
        words.append(_encode_chunk(chunk, encoding))
    return (CRLF + " ").join(words)


def _encode_chunk(text: str, encoding: str) -> str:
    data = text.encode("utf-8")
    if encoding == "B":
        payload = base64.b64encode(data).decode("ascii")
    else:
        payload = "".join(
            chr(b) if chr(b).isalnum() and b < 0x80 else "_" if b == 0x20 else f"={b:02X}"
            for b in data
        )
    return f"=?UTF-8?{encoding}?{payload}?="


def header_text(text: str, rng: random.Random) -> str:
    """Plain ASCII stays as is; anything else becomes B or Q encoded words at random."""
    if text.isascii():
        return text
    return encode_word(text, rng.choice("BQ"))


def address(name: str, addr: str, rng: random.Random) -> str:
    if not name:
        return addr
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{addr}>' if any(c in name for c in "'.,\"") else f"{name} <{addr}>"
    return f"{header_text(name, rng)} <{addr}>"


def body_text(rng: random.Random, size: int) -> str:
    """``size`` bytes-ish of prose ending in CRLF, sliced at a random line of the pool."""
    start = _POOL.find(CRLF, rng.randrange(len(_POOL) // 2)) + 2
    text = _POOL[start : start + size]
    cut = text.rfind(CRLF)
    return text[: cut + 2] if cut > 0 else text + CRLF


def base64_lines(data: bytes) -> str:
    """Base64 in 76-column lines with CRLF endings, as MIME requires."""
    encoded = base64.b64encode(data).decode("ascii")
    return CRLF.join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + CRLF
