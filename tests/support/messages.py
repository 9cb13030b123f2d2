"""``make_messages``: a deterministic, varied mailbox's worth of messages.

The mix is chosen to exercise a caching proxy: BODYSTRUCTURE of every common MIME shape,
large literals (attachments up to ~200 KB), non-ASCII headers for ENVELOPE and SEARCH,
thread headers for THREAD/REFERENCES, and a spread of INTERNALDATEs for SINCE/BEFORE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from tests.support.mailgen import (
    CRLF,
    DOMAIN,
    PEOPLE,
    SPAN,
    START,
    SUBJECTS,
    GeneratedMessage,
    address,
    base64_lines,
    body_text,
    header_text,
)

#: Senders' time zones, so Date headers are not all UTC (Seoul, Berlin, New York, ...).
ZONES = tuple(timezone(timedelta(hours=h)) for h in (0, 9, 1, 2, -5, -8))

#: Relative weights of the message shapes.
SHAPES = {"plain": 45, "alternative": 25, "attachment": 20, "rfc822": 10}


@dataclass
class _Headers:
    """What a message needs to know about its place in the mailbox and its thread."""

    message_id: str
    subject: str
    date: datetime
    sender: tuple[str, str]
    recipient: tuple[str, str]
    references: list[str] = field(default_factory=list)


def _header_block(h: _Headers, rng: random.Random, content_headers: str) -> str:
    lines = [
        f"Return-Path: <{h.sender[1]}>",
        f"From: {address(*h.sender, rng)}",
        f"To: {address(*h.recipient, rng)}",
        f"Subject: {header_text(h.subject, rng)}",
        f"Date: {format_datetime(h.date)}",
        f"Message-ID: {h.message_id}",
    ]
    if h.references:
        lines.append(f"In-Reply-To: {h.references[-1]}")
        lines.append("References: " + (CRLF + " ").join(h.references))
    lines.append("MIME-Version: 1.0")
    return CRLF.join(lines) + CRLF + content_headers


def _text_part(rng: random.Random, size: int) -> tuple[str, str]:
    """(content headers, body) of a UTF-8 text/plain part sent as 8bit."""
    headers = f"Content-Type: text/plain; charset=UTF-8{CRLF}Content-Transfer-Encoding: 8bit{CRLF}"
    return headers, body_text(rng, size)


def _html_part(text: str) -> tuple[str, str]:
    paragraphs = "".join(f"<p>{line}</p>{CRLF}" for line in text.split(CRLF) if line)
    html = f"<html><body>{CRLF}{paragraphs}</body></html>{CRLF}"
    return (
        f"Content-Type: text/html; charset=UTF-8{CRLF}Content-Transfer-Encoding: 8bit{CRLF}",
        html,
    )


def _multipart(subtype: str, boundary: str, parts: list[tuple[str, str]]) -> tuple[str, str]:
    body = f"This is a multi-part message in MIME format.{CRLF}"
    for headers, content in parts:
        body += f"{CRLF}--{boundary}{CRLF}{headers}{CRLF}{content}"
    body += f"{CRLF}--{boundary}--{CRLF}"
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"{CRLF}', body


def _attachment(rng: random.Random) -> tuple[str, str]:
    # Mostly a few KB, sometimes large: big literals are where streaming bugs hide.
    size = rng.randint(2_000, 12_000) if rng.random() < 0.85 else rng.randint(50_000, 200_000)
    kind, ext = rng.choice(
        [("application/pdf", "pdf"), ("image/png", "png"), ("application/octet-stream", "bin")]
    )
    name = rng.choice(["report", "scan", "Übersicht", "첨부파일", "photo"]) + f".{ext}"
    headers = (
        f'Content-Type: {kind}; name="{name}"{CRLF}'
        f"Content-Transfer-Encoding: base64{CRLF}"
        f'Content-Disposition: attachment; filename="{name}"{CRLF}'
    )
    return headers, base64_lines(rng.randbytes(size))


def _body(shape: str, h: _Headers, rng: random.Random, boundary: str) -> tuple[str, str]:
    """(content headers, body) for the top-level entity of the given shape."""
    size = int(rng.triangular(1_500, 19_000, 4_000))
    if shape == "plain":
        return _text_part(rng, size)
    if shape == "alternative":
        headers, text = _text_part(rng, size // 2)
        return _multipart("alternative", boundary, [(headers, text), _html_part(text)])
    if shape == "attachment":
        return _multipart("mixed", boundary, [_text_part(rng, size // 3), _attachment(rng)])
    inner_headers = _Headers(
        message_id=f"<fwd.{h.message_id[1:]}",
        subject=rng.choice(SUBJECTS),
        date=h.date - SPAN / 50,
        sender=rng.choice(PEOPLE),
        recipient=rng.choice(PEOPLE),
    )
    inner_content, inner_body = _text_part(rng, size // 2)
    inner = _header_block(inner_headers, rng, inner_content) + CRLF + inner_body
    forwarded_headers = (
        f"Content-Type: message/rfc822{CRLF}"
        f'Content-Disposition: attachment; filename="forwarded.eml"{CRLF}'
    )
    forwarded = (forwarded_headers, inner)
    return _multipart("mixed", boundary, [_text_part(rng, 600), forwarded])


def _flags(rng: random.Random) -> tuple[str, ...]:
    flags = []
    if rng.random() < 0.7:
        flags.append("\\Seen")
    if rng.random() < 0.12:
        flags.append("\\Flagged")
    if rng.random() < 0.15:
        flags.append("\\Answered")
    if rng.random() < 0.08:
        flags.append("$Label1")
    return tuple(flags)


def make_messages(n: int, seed: int = 0) -> list[GeneratedMessage]:
    """Return ``n`` messages, in ascending Date order, identical for the same (n, seed).

    About a third are replies to an earlier message (Re: subject, In-Reply-To and a
    References chain), so threads span the list. Message-IDs are unique within a call and
    carry the seed, so different seeds never collide.
    """
    rng = random.Random(seed)
    shapes = list(SHAPES)
    weights = list(SHAPES.values())
    made: list[_Headers] = []
    out: list[GeneratedMessage] = []
    for i in range(n):
        date = START + SPAN * ((i + rng.random()) / max(n, 1))
        h = _Headers(
            message_id=f"<{seed}.{i}.{rng.getrandbits(40):010x}@{DOMAIN}>",
            subject=rng.choice(SUBJECTS),
            date=date.replace(microsecond=0).astimezone(rng.choice(ZONES)),
            sender=rng.choice(PEOPLE),
            recipient=rng.choice(PEOPLE),
        )
        if made and rng.random() < 0.33:
            parent = made[rng.randrange(max(0, len(made) - 50), len(made))]
            h.subject = (
                parent.subject if parent.subject.startswith("Re: ") else ("Re: " + parent.subject)
            )
            h.references = (parent.references + [parent.message_id])[-10:]
            h.recipient = parent.sender
        made.append(h)
        shape = rng.choices(shapes, weights)[0]
        content_headers, body = _body(shape, h, rng, f"=_part_{seed}_{i}_{rng.getrandbits(32):x}")
        raw = _header_block(h, rng, content_headers) + CRLF + body
        out.append(GeneratedMessage(raw.encode("utf-8"), _flags(rng)))
    return out
