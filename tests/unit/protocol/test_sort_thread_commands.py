"""SORT, THREAD (RFC 5256, RFC 5267 RETURN) and COMPRESS (RFC 4978) command grammar."""

from __future__ import annotations

import datetime

import pytest

from imapproxy.protocol import CommandError, Compress, SearchKey, SequenceSet, Sort, Thread

from .helpers import SPLITS, read_commands

ALL = SearchKey("AND", (SearchKey("ALL"),))


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # RFC 5256 §3 examples
        (
            b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n",
            Sort(
                "A282",
                False,
                (("SUBJECT", False),),
                "UTF-8",
                SearchKey("AND", (SearchKey("SINCE", (datetime.date(1994, 2, 1),)),)),
            ),
        ),
        (
            b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n",
            Sort("A283", False, (("SUBJECT", False), ("DATE", True)), "UTF-8", ALL),
        ),
        (
            b"a UID SORT (reverse arrival displayfrom) us-ascii ALL\r\n",
            Sort("a", True, (("ARRIVAL", True), ("DISPLAYFROM", False)), "us-ascii", ALL),
        ),
        # RFC 5267 ESORT
        (
            b"a SORT RETURN (MIN MAX) (DATE) UTF-8 ALL\r\n",
            Sort("a", False, (("DATE", False),), "UTF-8", ALL, ("MIN", "MAX")),
        ),
        (
            b"a SORT RETURN () (DATE) UTF-8 $\r\n",
            Sort(
                "a",
                False,
                (("DATE", False),),
                "UTF-8",
                SearchKey("AND", (SearchKey("SEQ", (SequenceSet((), saved=True),)),)),
                (),
            ),
        ),
        # RFC 5256 §4 examples
        (
            b'A284 THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"\r\n',
            Thread(
                "A284",
                False,
                "ORDEREDSUBJECT",
                "US-ASCII",
                SearchKey("AND", (SearchKey("TEXT", (b"gewp",)),)),
            ),
        ),
        (
            b"a UID THREAD references UTF-8 ALL\r\n",
            Thread("a", True, "REFERENCES", "UTF-8", ALL),
        ),
        (b"a COMPRESS DEFLATE\r\n", Compress("a", "DEFLATE")),
        (b"a compress deflate\r\n", Compress("a", "DEFLATE")),
    ],
)
def test_command_parses(wire: bytes, expected: object, how: str) -> None:
    assert read_commands(wire, how) == [expected]


@pytest.mark.parametrize(
    "wire",
    [
        b"a SORT SUBJECT UTF-8 ALL\r\n",  # criteria must be a list
        b"a SORT () UTF-8 ALL\r\n",
        b"a SORT (REVERSE) UTF-8 ALL\r\n",
        b"a SORT (REVERSE REVERSE DATE) UTF-8 ALL\r\n",
        b"a SORT (SUBJECT NOSUCH) UTF-8 ALL\r\n",
        b"a SORT (SUBJECT) UTF-8\r\n",  # no search criteria
        b"a SORT (SUBJECT)\r\n",
        b"a SORT RETURN (PARTIAL) (DATE) UTF-8 ALL\r\n",
        b"a THREAD REFS UTF-8 ALL\r\n",  # not offered
        b"a THREAD REFERENCES\r\n",
        b"a COMPRESS\r\n",
        b"a COMPRESS DEFLATE EXTRA\r\n",
        b"a UID COMPRESS DEFLATE\r\n",
    ],
)
def test_bad_commands_are_refused(wire: bytes) -> None:
    [event] = read_commands(wire)
    assert isinstance(event, CommandError)
    assert event.tag == "a"
