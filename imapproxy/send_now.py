"""When what a connection writes leaves: at once, not on the reactor's next pass nor
behind Nagle's algorithm. Every connection the proxy has is an exchange of commands
and answers, where a few bytes held back stall the other side."""

from __future__ import annotations

import logging

from twisted.internet.abstract import FileDescriptor

log = logging.getLogger(__name__)


def _socket_transport(transport: object) -> FileDescriptor | None:
    """The transport that owns the socket, below any wrapper (TLS)."""
    while transport is not None and not isinstance(transport, FileDescriptor):
        transport = getattr(transport, "transport", None)
    return transport


def no_delay(transport: object) -> None:
    """Turn Nagle's algorithm off (TCP_NODELAY) on the socket under transport.

    Nagle holds a small write back while an earlier one is unacknowledged: the tagged
    OK written after a FETCH's literal waited for the client's ACK, and so did a
    command to the upstream written right after the one before it. Measured on a
    first read of a body with no added latency: 1.6 -> 1.1 ms a read. A transport
    without a TCP socket (a test's, a UNIX socket's) is left as it is; a socket that
    refuses the option (closing already) costs nothing but the log line."""
    socket_transport = _socket_transport(transport)
    set_no_delay = getattr(socket_transport, "setTcpNoDelay", None)
    if set_no_delay is None:
        return
    try:
        set_no_delay(True)
    except OSError as exc:
        log.debug("TCP_NODELAY not set: %s", exc)


def send_now(transport: object) -> None:
    """Write what the socket under transport holds to the kernel now: Twisted sends a
    write only when the reactor next polls, after the timed calls and whatever work is
    still running in this turn. Over TLS the bytes are already in the TCP transport's
    buffer (encrypted as they were written). The socket is non-blocking: what it does
    not take now goes on the next pass, as before. Left to the reactor: a connection
    closing, and one that a pull producer feeds as it drains (a large literal, a slice
    at a time), which the write would call back into."""
    socket_transport = _socket_transport(transport)
    if socket_transport is None or not socket_transport.connected or socket_transport.disconnecting:
        return
    if socket_transport.producer is not None and not socket_transport.streamingProducer:
        return
    socket_transport.doWrite()
