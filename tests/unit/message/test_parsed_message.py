"""ParsedMessage: one structure parse serves every section of a FETCH, in linear time."""

from __future__ import annotations

import time

import pytest

from imapproxy.message import ParsedMessage, extract_section
from imapproxy.message import _structure as structure
from tests.unit.message.corpus import CORPUS, EDGE, SECTIONS, parse_section

MESSAGES = {**CORPUS, **EDGE}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_section_gives_exactly_what_extract_section_gives(name: str) -> None:
    raw = MESSAGES[name]
    parsed = ParsedMessage(raw)
    for spec in SECTIONS:
        assert parsed.section(*parse_section(spec)) == extract_section(raw, *parse_section(spec))


def test_structure_is_parsed_once_and_only_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = structure._structure

    def counting(raw: bytes) -> structure._Part:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(structure, "_structure", counting)
    parsed = ParsedMessage(CORPUS["nested"])
    assert parsed.section((), None) == CORPUS["nested"]
    assert parsed.section((), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: nested\r\n\r\n"
    assert calls == []  # the top level needs no structure
    for part in [(1,), (2,), (1, 1), (2, 1)]:
        parsed.section(part, None)
        parsed.section(part, "MIME")
    assert len(calls) == 1


def test_bad_requests_raise_before_parsing() -> None:
    parsed = ParsedMessage(CORPUS["plain"])
    with pytest.raises(ValueError):
        parsed.section((), "MIME")
    with pytest.raises(ValueError):
        parsed.section((0,), None)
    with pytest.raises(ValueError):
        parsed.section((1,), "BODY")


def _timed(raw: bytes, part: tuple[int, ...]) -> tuple[bytes | None, float]:
    # CPU time of this process: a guard against blow-ups, robust on a shared machine.
    started = time.process_time()
    result = ParsedMessage(raw).section(part, None)
    return result, time.process_time() - started


def test_a_part_of_bare_newlines_is_scanned_in_linear_time() -> None:
    # 30 MB of bare LF took 7.7 s when every line was looked at from Python.
    body = b"\n" * 5_000_000
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + body + b"\r\n--b--\r\n"
    result, elapsed = _timed(raw, (1,))
    assert result == body
    assert elapsed < 0.5


def test_many_open_boundaries_do_not_slow_down_each_line() -> None:
    # 90 nested multiparts over 30 MB took 2.1 s: every line was checked against each.
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (d, d) for d in range(90)
    )
    body = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq\r\n--x\r\n" * 60_000
    result, elapsed = _timed(head + b"\r\n" + body, (1,) * 90)
    assert result == body
    assert elapsed < 0.5
