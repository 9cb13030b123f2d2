"""Handing what a connection has written to the kernel now, not on the reactor's next
pass: Twisted sends a write only when the reactor next polls, after the timed calls
and whatever work is still running in this turn."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor


def send_now(transport: object) -> None:
    """Write what the socket under transport holds to the kernel. Over TLS the bytes
    are already in the TCP transport's buffer (encrypted as they were written). The
    socket is non-blocking: what it does not take now goes on the next pass, as
    before. Left to the reactor: a connection closing, and one that a pull producer
    feeds as it drains (a large literal, a slice at a time), which the write would
    call back into."""
    while transport is not None and not isinstance(transport, FileDescriptor):
        transport = getattr(transport, "transport", None)
    if transport is None or not transport.connected or transport.disconnecting:
        return
    if transport.producer is not None and not transport.streamingProducer:
        return
    transport.doWrite()
