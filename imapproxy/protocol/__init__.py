"""Sans-IO IMAP protocol core: values, commands, responses and their readers.

Nothing here does I/O, logs, or imports Twisted or LMDB. Servers feed client
bytes to :class:`CommandReader`; the upstream client feeds server bytes to
:class:`ResponseReader`; both answer with events from ``next_event()`` until
``NEED_DATA``. Output goes through :func:`format_response` /
:func:`format_command`, which return lists of chunks so large literals are
never copied.
"""

from ._command_format import format_append_start, format_command
from ._command_reader import CommandReader, ReaderEvent
from ._commands import (
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Move,
    Namespace,
    Noop,
    QResync,
    Rename,
    Search,
    Select,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
)
from ._dates import format_date, format_datetime, parse_date, parse_datetime
from ._errors import ParseError, ProtocolError
from ._events import (
    NEED_DATA,
    AppendEnd,
    AppendStart,
    CommandError,
    ContinuationRequired,
    LiteralChunk,
    RawLine,
    Sentinel,
)
from ._fetch import FetchAttribute, Section, fetch_items, parse_fetch_attribute
from ._fetch_raw import RAW_FETCH_ITEMS
from ._mutf7 import decode_mutf7, encode_mutf7
from ._response_reader import DEFAULT_MAX_LITERAL, ResponseReader
from ._responses import (
    ContinuationRequest,
    Response,
    ResponseCode,
    TaggedResponse,
    UntaggedData,
    UntaggedStatus,
    format_response,
    parse_response,
)
from ._search import SearchKey
from ._seqset import SequenceSet, parse_sequence_set
from ._sort_thread import Compress, Sort, Thread
from ._values import Atom, Literal8, Raw, Value, format_value_chunks, serialize_value

__all__ = [
    "DEFAULT_MAX_LITERAL",
    "NEED_DATA",
    "RAW_FETCH_ITEMS",
    "AppendEnd",
    "AppendStart",
    # values
    "Atom",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    # commands
    "Command",
    "CommandError",
    # command reader
    "CommandReader",
    "Compress",
    "ContinuationRequest",
    "ContinuationRequired",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "Id",
    "Idle",
    "List",
    "Literal8",
    "LiteralChunk",
    "Login",
    "Logout",
    "Move",
    "Namespace",
    "Noop",
    "ParseError",
    "ProtocolError",
    "QResync",
    "Raw",
    "RawLine",
    "ReaderEvent",
    "Rename",
    # responses
    "Response",
    "ResponseCode",
    "ResponseReader",
    "Search",
    "SearchKey",
    "Section",
    "Select",
    "Sentinel",
    # sequence sets, fetch, search
    "SequenceSet",
    "Sort",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "TaggedResponse",
    "Thread",
    "Unselect",
    "Unsubscribe",
    "UntaggedData",
    "UntaggedStatus",
    "Value",
    "decode_mutf7",
    "encode_mutf7",
    "fetch_items",
    "format_append_start",
    "format_command",
    "format_date",
    "format_datetime",
    "format_response",
    "format_value_chunks",
    "parse_date",
    "parse_datetime",
    "parse_fetch_attribute",
    "parse_response",
    "parse_sequence_set",
    "serialize_value",
]
