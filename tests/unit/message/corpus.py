"""Messages with many MIME structures, shared by the unit tests and the live Dovecot check.

Each is written with LF for readability and converted to CRLF, because that is what the
proxy caches (the upstream's BODY[] is always CRLF); ``LF_ONLY`` deliberately is not.
"""

from __future__ import annotations

import re


def crlf(text: str) -> bytes:
    """Turn a readable LF literal into the CRLF bytes a server returns."""
    return text.replace("\n", "\r\n").encode()


PLAIN = crlf(
    """From: Alice <alice@example.org>
To: bob@example.org
Subject: plain
 folded subject continuation
Date: Mon, 1 Jan 2024 10:00:00 +0000
Message-ID: <plain@example.org>

Hello Bob,
just text.
"""
)

ALTERNATIVE = crlf(
    """From: alice@example.org
Subject: alternative
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=alt-1

--alt-1
Content-Type: text/plain; charset=utf-8

plain body
--alt-1
Content-Type: text/html; charset=utf-8

<p>html body</p>

--alt-1--
"""
)

MIXED_BASE64 = crlf(
    """From: alice@example.org
To: bob@example.org
Subject: with attachment
MIME-Version: 1.0
Content-Type: multipart/mixed;
 boundary="==mixed boundary (odd) 42"

This is the preamble, ignored by MIME readers.
--==mixed boundary (odd) 42
Content-Type: text/plain

See attached.
--==mixed boundary (odd) 42
Content-Type: application/octet-stream; name="blob.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="blob.bin"

AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
--==mixed boundary (odd) 42--
This is the epilogue.
It has two lines.
"""
)

NESTED = crlf(
    """From: alice@example.org
Subject: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

inner preamble
--inner
Content-Type: text/plain

inner plain
--inner
Content-Type: text/html

<b>inner html</b>
--inner--
inner epilogue

--outer
Content-Type: image/png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer--
"""
)

RFC822_ATTACHED = crlf(
    """From: alice@example.org
Subject: forwarded
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain

See the forwarded message.
--fwd
Content-Type: message/rfc822
Content-Description: forwarded

From: carol@example.org
Subject: inner message
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="in-alt"

--in-alt
Content-Type: text/plain

inner text
--in-alt
Content-Type: text/html

<i>inner html</i>
--in-alt--

--fwd--
"""
)

HEADER_ONLY = crlf(
    """From: alice@example.org
Subject: no body at all
Date: Mon, 1 Jan 2024 10:00:00 +0000
"""
)

LF_ONLY = b"From: alice@example.org\nSubject: lf only\n\nline one\nline two\n"

PARAMS_ANY_ORDER = crlf(
    """From: alice@example.org
Subject: odd content-type
MIME-Version: 1.0
CONTENT-TYPE: Multipart/Mixed; charset=us-ascii;
\tBoundary="b'(+_,-./:=?)";
  foo=bar

--b'(+_,-./:=?)
Content-Type: text/plain

first
--b'(+_,-./:=?)\t
content-type: message/rfc822

Subject: encapsulated plain

encapsulated body
--b'(+_,-./:=?)--
"""
)

NO_CLOSE_DELIMITER = crlf(
    """From: alice@example.org
Subject: truncated multipart
Content-Type: multipart/mixed; boundary=trunc

--trunc
Content-Type: text/plain

one
--trunc

no headers in this part
"""
)

CORPUS: dict[str, bytes] = {
    "plain": PLAIN,
    "alternative": ALTERNATIVE,
    "mixed_base64": MIXED_BASE64,
    "nested": NESTED,
    "rfc822_attached": RFC822_ATTACHED,
    "header_only": HEADER_ONLY,
    "lf_only": LF_ONLY,
    "params_any_order": PARAMS_ANY_ORDER,
    "no_close_delimiter": NO_CLOSE_DELIMITER,
}

SECTIONS: tuple[str, ...] = (
    "",
    "HEADER",
    "TEXT",
    "HEADER.FIELDS (SUBJECT FROM)",
    "HEADER.FIELDS.NOT (SUBJECT)",
    "HEADER.FIELDS (X-NOTHERE)",
    "1",
    "1.MIME",
    "1.1",
    "1.2",
    "1.HEADER",
    "1.TEXT",
    "2",
    "2.MIME",
    "2.HEADER",
    "2.TEXT",
    "2.HEADER.FIELDS (SUBJECT)",
    "2.1",
    "2.1.MIME",
    "2.2",
    "2.3",
    "3",
    "9",
    "9.MIME",
    "1.1.1",
    "1.HEADER.FIELDS.NOT (SUBJECT)",
    "1.HEADER.FIELDS (SUBJECT)",
    "1.1.MIME",
)

# Edge cases: broken or unusual structure whose handling was checked against Dovecot.
EDGE: dict[str, bytes] = {
    "no_newline_at_all": b"Subject: x\r\nFrom: a@b",
    "starts_with_blank_line": crlf("\nbody only\n"),
    "unquoted_boundary_with_equals": crlf(
        """Content-Type: multipart/mixed; boundary=----=_Part_1

------=_Part_1
Content-Type: text/plain

one
------=_Part_1
Content-Type: text/plain

two
------=_Part_1--
"""
    ),
    "boundary_never_used": crlf(
        """Content-Type: multipart/mixed; boundary=nope

just text, no parts
"""
    ),
    "multipart_without_boundary": crlf(
        """Content-Type: multipart/mixed

--x
Content-Type: text/plain

hi
--x--
"""
    ),
    "malformed_content_type": crlf(
        """Content-Type: multipart/mixed boundary=x

--x
Content-Type: text/plain

hi
--x--
"""
    ),
    "digest": crlf(
        """Content-Type: multipart/digest; boundary=d

--d

Subject: digest one

first digest body
--d
Content-Type: text/plain

not a message
--d--
"""
    ),
    "part_header_without_blank_line": crlf(
        """Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain
--b

second
--b
--b--
"""
    ),
    "duplicate_content_type": crlf(
        """Content-Type: multipart/mixed; boundary=first
Content-Type: multipart/mixed; boundary=second

--second
Content-Type: text/plain

in second
--first
Content-Type: text/plain

in first
--first--
"""
    ),
    "prefix_boundaries": crlf(
        """Content-Type: multipart/mixed; boundary=ab

--ab
Content-Type: multipart/alternative; boundary=abc

--abc
Content-Type: text/plain

inner
--ab
Content-Type: text/plain

outer two
--ab--
"""
    ),
    "toplevel_rfc822": crlf(
        """From: a@b
Subject: wrapper
Content-Type: message/rfc822

Subject: wrapped
Content-Type: multipart/mixed; boundary=w

--w
Content-Type: text/plain

wrapped one
--w--
"""
    ),
    "odd_header_lines": crlf(
        """Subject : spaced name
NoColonLine
subject: second subject
X-Empty:
From: a@b

body
"""
    ),
    "close_in_preamble": crlf(
        """Content-Type: multipart/mixed; boundary=q

--q--
after close
"""
    ),
    "lf_multipart": b"Content-Type: multipart/mixed; boundary=lf\n\npre\n--lf\n"
    b"Content-Type: text/plain\n\nlf part\n--lf--\nepi\n",
    "empty": b"",
    "rfc822_header_runs_into_boundary": crlf(
        """Content-Type: multipart/mixed; boundary=r

--r
Content-Type: message/rfc822

Subject: inner
From: x@y
--r
Content-Type: text/plain

after
--r--
"""
    ),
    "rfc822_header_runs_to_eof": crlf(
        """Content-Type: message/rfc822

Subject: inner
From: x@y"""
    ),
    "rfc822_cut_by_boundary": crlf(
        """Content-Type: multipart/mixed; boundary=r

--r
Content-Type: message/rfc822
--r
Content-Type: text/plain

after
--r--
"""
    ),
    # A blank line right before a boundary line: its CRLF is the boundary's, so the
    # header ends without it and the body is empty.
    "empty_body_before_boundary": crlf(
        """Content-Type: multipart/mixed; boundary==_b

--=_b
Content-Type: text/plain; charset=utf-8

--=_b

--=_b
Content-Type: message/rfc822

Subject: s
From: a

--=_b--
"""
    ),
    "rfc822_blank_line_before_boundary": crlf(
        """Content-Type: multipart/mixed; boundary=d

--d
Content-Type: message/rfc822

--d
Content-Type: text/plain
Subject: later

after
--d--
"""
    ),
    "outer_boundary_after_multipart_header": crlf(
        """Content-Type: multipart/mixed; boundary=dd

--dd
Content-Type: multipart/mixed; boundary=d

--dd
Subject: two

body
--dd--
"""
    ),
}


_SECTION_RE = re.compile(r"^(?P<part>\d+(?:\.\d+)*)?\.?(?P<text>[A-Z.]*)(?: \((?P<fields>.*)\))?$")


def parse_section(section: str) -> tuple[tuple[int, ...], str | None, tuple[str, ...]]:
    """Split ``2.HEADER.FIELDS (A B)`` into ``((2,), "HEADER.FIELDS", ("A", "B"))``."""
    match = _SECTION_RE.match(section)
    assert match is not None, section
    part = tuple(int(n) for n in match["part"].split(".")) if match["part"] else ()
    fields = tuple(match["fields"].split()) if match["fields"] else ()
    return part, match["text"] or None, fields
