"""Answer IMAP FETCH ``BODY[section]`` requests from a cached raw message.

The proxy keeps each message's ``BODY[]`` bytes and must later serve any section of it
byte-identically to what the upstream (Dovecot 2.3) would have sent, so a client cannot
tell whether it talks to the cache or to the server.  That rules out the stdlib ``email``
package (it re-serialises and normalises) and means the MIME structure is found the way
Dovecot's ``message-parser.c`` finds it, quirks included:

* A header block ends at the first empty line; with no empty line the header is all the
  data up to the end (or up to a boundary line) and the body is empty.
* A boundary line is any line starting with ``--`` + boundary: only the prefix has to
  match (RFC 2046 5.1.1 allows trailing whitespace; Dovecot allows anything).  Every open
  multipart's boundary is live, the longest match wins, ties go to the innermost.
* The CRLF before a boundary line belongs to the boundary, not to the part before it.
  That includes the CRLF of an empty line right before an enclosing boundary: the
  header then ends without its blank line and the body is empty.
* A multipart without a close delimiter runs to the end of the data.
* A boundary that cuts a part's header short leaves that header without its last CRLF,
  which goes to the enclosing parts instead.
* HEADER.FIELDS of the top-level message always ends with a blank line; every other
  HEADER.FIELDS[.NOT] filters the raw bytes from the message start up to the first empty
  line (boundaries not considered) and has a blank line only if one was there.
* Section paths follow Dovecot's ``imap_msgpart_find``: ``N.1`` of a leaf part is the
  part itself, ``1`` of a single-part message is its body, and ``1.MIME`` of a single-part
  message is the message header.

Header fields and boundary lines are found with C-level searches (``re``, ``bytes.find``),
so the cost stays linear in the message size however it is folded or nested.  For several
sections of one message, :class:`ParsedMessage` parses the structure once.

Nothing here does I/O; all functions take and return ``bytes``.
"""

from imapproxy.message._header import header_fields, header_value, split_header
from imapproxy.message._sections import ParsedMessage, UnknownEncoding, extract_section, partial

__all__ = [
    "ParsedMessage",
    "UnknownEncoding",
    "extract_section",
    "header_fields",
    "header_value",
    "partial",
    "split_header",
]
