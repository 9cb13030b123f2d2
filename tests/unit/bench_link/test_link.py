"""The benchmark's emulated link: it must cost what it claims, and nothing else.

Figures measured through ``bench.link.Link`` are only worth something if a round trip
through it takes the configured RTT, a capped link delivers at the cap (not below it),
an uncapped one does not throttle, and every byte arrives once, in order, counted.
Timing bounds leave room for a loaded 2-core machine but would catch a link that
forgets the delay, applies it twice, or throttles far below the cap.
"""

from __future__ import annotations

import os
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.link import SEGMENT, Link, LinkProcess, Profile
from tests.support.net import LOOPBACK, free_port

SOURCE_BYTES = 1_000_000


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Source(socketserver.BaseRequestHandler):
    """Sends SOURCE_BYTES as soon as the connection is made, then closes."""

    def handle(self) -> None:
        self.request.sendall(b"x" * SOURCE_BYTES)


class _Sink(socketserver.BaseRequestHandler):
    """Reads to EOF, then answers with the byte count (proves half-close is passed on)."""

    def handle(self) -> None:
        total = 0
        while data := self.request.recv(65536):
            total += len(data)
        self.request.sendall(str(total).encode())


@contextmanager
def _server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _link(handler: type[socketserver.BaseRequestHandler], profile: Profile) -> Iterator[Link]:
    with _server(handler) as port, Link(LOOPBACK, port, profile) as link:
        yield link


def _connect(link: Link) -> socket.socket:
    sock = socket.create_connection((link.host, link.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def _ping(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(b"ping\r\n")
    got = b""
    while len(got) < 6:
        got += sock.recv(64)
    assert got == b"ping\r\n"
    return time.perf_counter() - start


def test_a_round_trip_takes_the_rtt_and_a_new_connection_its_handshake() -> None:
    rtt = 0.1
    with _link(_Echo, Profile(rtt_s=rtt)) as link, _connect(link) as sock:
        # The first exchange waits for the emulated handshake (1.5 RTT) plus a round trip.
        first = _ping(sock)
        pings = [_ping(sock) for _ in range(5)]
    assert 2.4 * rtt <= first <= 2.5 * rtt + 0.1
    assert rtt * 0.97 <= statistics.median(pings) <= rtt + 0.04


def test_without_latency_a_round_trip_is_quick() -> None:
    with _link(_Echo, Profile()) as link, _connect(link) as sock:
        pings = [_ping(sock) for _ in range(5)]
    assert statistics.median(pings) < 0.02


def test_a_capped_link_delivers_at_the_cap() -> None:
    cap_bps = 8_000_000  # 1 MB/s: SOURCE_BYTES take one second
    with _link(_Source, Profile(bandwidth_bps=cap_bps)) as link, _connect(link) as sock:
        start = time.perf_counter()
        data = _read_all(sock)
        elapsed = time.perf_counter() - start
    assert len(data) == SOURCE_BYTES
    expected = SOURCE_BYTES * 8 / cap_bps
    assert expected * 0.95 <= elapsed <= expected * 1.35


def test_the_cap_holds_upstream_too_and_half_close_is_passed_on() -> None:
    cap_bps = 8_000_000
    payload = b"y" * 500_000
    with _link(_Sink, Profile(bandwidth_bps=cap_bps)) as link, _connect(link) as sock:
        start = time.perf_counter()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = _read_all(sock)
        elapsed = time.perf_counter() - start
        assert link.bytes_up == len(payload)
    assert answer == str(len(payload)).encode()
    expected = len(payload) * 8 / cap_bps
    assert expected * 0.95 <= elapsed <= expected * 1.4


def test_latency_does_not_throttle_below_the_cap() -> None:
    # 10 Mbit/s and 50 ms: a link whose queue were smaller than a round trip's worth of
    # data would stall every RTT and deliver well below the cap.
    cap_bps = 10_000_000
    rtt = 0.05
    with _link(_Source, Profile(rtt, cap_bps)) as link, _connect(link) as sock:
        sock.recv(1)  # connected, first byte in: the handshake is behind us
        start = time.perf_counter()
        data = _read_all(sock)
        elapsed = time.perf_counter() - start
    assert len(data) == SOURCE_BYTES - 1
    assert elapsed <= (SOURCE_BYTES * 8 / cap_bps) * 1.35


def test_an_uncapped_link_with_latency_is_fast() -> None:
    with _link(_Echo, Profile(rtt_s=0.05)) as link, _connect(link) as sock:
        _ping(sock)
        payload = os.urandom(8 * 1024 * 1024)
        start = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        got = bytearray()
        while len(got) < len(payload):
            got += sock.recv(1 << 20)
        elapsed = time.perf_counter() - start
        sender.join()
    assert bytes(got) == payload  # every byte, once, in order
    assert elapsed < 2.0  # > 4 MB/s even on a busy machine; the cap is absent, not low


def test_bytes_are_counted_each_way_and_order_is_kept_across_segments() -> None:
    payload = os.urandom(5 * SEGMENT + 123)
    with _link(_Echo, Profile(rtt_s=0.02, bandwidth_bps=50_000_000)) as link:
        with _connect(link) as sock:
            sock.sendall(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += sock.recv(65536)
        assert bytes(got) == payload
        assert (link.bytes_up, link.bytes_down) == (len(payload), len(payload))
        link.reset_counters()
        assert (link.bytes_up, link.bytes_down) == (0, 0)


def test_a_target_that_is_down_resets_the_connection() -> None:
    with Link(LOOPBACK, free_port(), Profile(rtt_s=0.01)) as link, _connect(link) as sock:
        try:
            data = sock.recv(10)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert link.active_connections == 0


def test_a_link_in_its_own_process_delays_and_counts_the_same() -> None:
    rtt = 0.06
    with _server(_Echo) as port, LinkProcess(LOOPBACK, port, Profile(rtt_s=rtt)) as link:
        with socket.create_connection((link.host, link.port), timeout=10) as sock:
            _ping(sock)
            pings = [_ping(sock) for _ in range(3)]
        assert (link.bytes_up, link.bytes_down) == (24, 24)
        link.reset_counters()
        assert (link.bytes_up, link.bytes_down) == (0, 0)
    assert rtt * 0.97 <= statistics.median(pings) <= rtt + 0.04


def test_profiles_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Profile(rtt_s=-1)
    with pytest.raises(ValueError):
        Profile(bandwidth_bps=0)


def test_commands_sent_upstream_are_counted_across_chunks_but_not_keepalives() -> None:
    """The resync scenario's round-trip count: work commands, not NOOP/IDLE/DONE, and
    nothing the server sends."""
    with _link(_Echo, Profile()) as link, _connect(link) as sock:
        for chunk in (
            b"P1 NOOP\r\nP2 EXA",
            b"MINE INBOX\r\nP3 IDLE\r\nDONE\r\n",
            b"P4 UID FETCH 1:* (FLAGS)\r\n",
        ):
            sock.sendall(chunk)
            time.sleep(0.05)
        expected = b"P1 NOOP\r\nP2 EXAMINE INBOX\r\nP3 IDLE\r\nDONE\r\nP4 UID FETCH 1:* (FLAGS)\r\n"
        got = b""
        while len(got) < len(expected):
            got += sock.recv(4096)
        assert got == expected
        assert link.commands_up == 2
        link.reset_counters()
        assert link.commands_up == 0
