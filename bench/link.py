"""An emulated network link: a TCP forwarder that adds a round-trip time and a bandwidth cap.

The benchmark compares a mail client talking to Dovecot directly with the same client
talking to a local imapproxy whose upstream connection crosses the network. On loopback
every round trip is free, which hides exactly what a caching proxy is for: on a phone or
a hotel Wi-Fi each upstream round trip costs tens of milliseconds. So both paths cross a
``Link`` with the same ``Profile``::

    direct:  client ──> Link ──> Dovecot
    proxy:   client ──> imapproxy ──> Link ──> Dovecot

The model, per direction, is a serial bottleneck followed by a fixed propagation delay:
a chunk that arrives at ``t`` leaves the bottleneck at ``max(t, free_at) + size / rate``
(``free_at`` is when the previous chunk finished, shared by every connection crossing the
link, as on a real access link) and is delivered ``rtt / 2`` later. Delivery times are
monotonic per direction, so byte order is preserved. Without a cap the bottleneck has no
cost and only the delay remains. A new connection reaches the target only after
``1.5 * rtt`` (the TCP handshake), so a server greeting arrives ``2 * rtt`` after
``connect()``, as on a real link.

Backpressure keeps memory bounded without throttling below the cap: a direction stops
reading from its source while more than ``queue_limit`` bytes wait for delivery (enough
to keep the link full for a whole round trip), and resumes below half of it.

Bytes are counted as delivered: ``bytes_up`` from the connecting side to the target,
``bytes_down`` back. Everything runs on one asyncio loop in a daemon thread; the public
methods are safe to call from any thread. ``LinkProcess`` runs a ``Link`` in a child
process instead: the benchmark uses that, so forwarding never waits for the GIL while
the client in the benchmark process parses 10,000 ENVELOPEs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tests.support.net import LOOPBACK

#: A capped link releases data in segments of this size, so a large read does not leave
#: the bottleneck as one burst (it would at a real link's packet granularity either).
SEGMENT = 16 * 1024
#: Queue limit per direction of an uncapped link: 4 MiB per 25 ms one-way is 160 MiB/s.
UNCAPPED_QUEUE = 4 * 1024 * 1024
#: Handshake cost of a new connection, in round trips, before the target sees it.
HANDSHAKE_RTTS = 1.5
COMMAND_TIMEOUT = 10.0
#: Child processes start fresh (no fork of a process with threads and sockets).
_SPAWN = multiprocessing.get_context("spawn")


#: A command line other than NOOP, IDLE and DONE (see ``_Flow.commands``).
_WORK = re.compile(rb"^[A-Za-z0-9.]+ (?!NOOP\b|IDLE\b)(UID )?[A-Z]+\b")


def _reset_counters(counts: Any) -> None:
    with counts.get_lock():
        counts[0] = counts[1] = counts[2] = 0


@dataclass(frozen=True)
class Profile:
    """What the link costs: a round-trip time and optionally a per-direction bandwidth cap."""

    rtt_s: float = 0.0
    #: Bits per second in each direction; None means no cap.
    bandwidth_bps: float | None = None

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or (self.bandwidth_bps is not None and self.bandwidth_bps <= 0):
            raise ValueError(f"unusable link profile {self!r}")

    @property
    def one_way_s(self) -> float:
        return self.rtt_s / 2

    @property
    def bytes_per_s(self) -> float | None:
        return None if self.bandwidth_bps is None else self.bandwidth_bps / 8

    @property
    def queue_limit(self) -> int:
        """Bytes a direction may hold: at least a round trip's worth at the cap, plus slack."""
        rate = self.bytes_per_s
        if rate is None:
            return UNCAPPED_QUEUE
        return int(2 * rate * max(self.rtt_s, 0.01)) + 4 * SEGMENT

    def describe(self) -> str:
        cap = "no cap" if self.bandwidth_bps is None else f"{self.bandwidth_bps / 1e6:g} Mbit/s"
        return f"rtt {self.rtt_s * 1000:g} ms, {cap}"


class _Bottleneck:
    """One direction of the link's capacity, shared by every connection that crosses it."""

    def __init__(self, profile: Profile) -> None:
        self.rate = profile.bytes_per_s
        self.free_at = 0.0

    def departures(self, now: float, size: int) -> list[tuple[float, int, int]]:
        """(departure time, start, end) for the segments of a chunk of ``size`` bytes."""
        if self.rate is None:
            return [(now, 0, size)]
        out = []
        for start in range(0, size, SEGMENT):
            end = min(size, start + SEGMENT)
            self.free_at = max(now, self.free_at) + (end - start) / self.rate
            out.append((self.free_at, start, end))
        return out


class _Side(asyncio.Protocol):
    """One socket of a forwarded connection; hands what it reads to its ``_Flow``."""

    def __init__(self, connection: _Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        self.transport: asyncio.Transport | None = None
        #: False while the socket's send buffer is full (asyncio's flow control).
        self.writable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        if self.connection.closed:
            return
        self.connection.flow_from(self).receive(data)

    def eof_received(self) -> bool:
        if self.connection.closed:
            return False
        self.connection.flow_from(self).receive(None)
        return True  # keep the other half open: half-close is passed on, not a close

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.side_lost(self, exc)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.connection.flow_to(self).pump()


class _Flow:
    """One direction of one connection: a FIFO of (delivery time, bytes or EOF)."""

    def __init__(
        self, link: Link, connection: _Connection, src: _Side, dst: _Side, upstream: bool
    ) -> None:
        self.link = link
        self.connection = connection
        self.src = src
        self.dst = dst
        self.upstream = upstream
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.paused = False
        self.eof_seen = False
        self.eof_delivered = False
        self.timer: asyncio.TimerHandle | None = None
        #: The unfinished last line of what went up (see ``commands``).
        self.partial = b""

    def receive(self, data: bytes | None) -> None:
        loop = self.link.loop
        now = loop.time()
        delay = self.link.profile.one_way_s
        if data is None:
            if self.eof_seen:
                return
            self.eof_seen = True
            # EOF travels behind the data already on the wire.
            last = self.queue[-1][0] if self.queue else now + delay
            self.queue.append((max(last, now + delay), None))
        else:
            bottleneck = self.link.bottleneck(self.upstream)
            view = memoryview(data)
            for departure, start, end in bottleneck.departures(now, len(data)):
                self.queue.append((departure + delay, bytes(view[start:end])))
            self.queued += len(data)
            if self.queued > self.link.profile.queue_limit and not self.paused:
                self._pause_source(True)
        self.pump()

    def commands(self, data: bytes) -> int:
        """How many command lines this chunk completes that ask the server for work:
        ``TAG VERB ...`` other than NOOP and IDLE (and IDLE's DONE), which a link
        sends on its own schedule. Upstream only. A line of an APPENDed message that
        happens to look like a command counts too: read the count where nothing is
        appended through the link (the resync scenario)."""
        if not self.upstream:
            return 0
        *complete, last = (self.partial + data).split(b"\n")
        self.partial = last[-512:]
        return sum(1 for line in complete if _WORK.match(line))

    def pump(self) -> None:
        """Deliver every due chunk the destination can take; schedule the next one."""
        loop = self.link.loop
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.dst.transport
        while self.queue and transport is not None and not transport.is_closing():
            due, data = self.queue[0]
            if due > loop.time():
                self.timer = loop.call_at(due, self.pump)
                break
            if not self.dst.writable:
                break  # resume_writing calls pump again
            self.queue.popleft()
            try:
                if data is None:
                    self.eof_delivered = True
                    if transport.can_write_eof():
                        transport.write_eof()
                    self.connection.maybe_finish()
                    break
                # Counted first: whoever reads the data may look at the counters at once.
                self.link.count(self.upstream, len(data), self.commands(data))
                transport.write(data)
            except OSError:
                self.connection.abort()  # the destination went away meanwhile
                return
            self.queued -= len(data)
        if self.paused and self.queued < self.link.profile.queue_limit // 2:
            self._pause_source(False)

    def _pause_source(self, pause: bool) -> None:
        transport = self.src.transport
        if transport is None or transport.is_closing():
            return
        self.paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Connection:
    """A client socket accepted by the link and its own socket to the target."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.client = _Side(self, "client")
        self.target = _Side(self, "target")
        self.up = _Flow(link, self, self.client, self.target, upstream=True)
        self.down = _Flow(link, self, self.target, self.client, upstream=False)
        self.closed = False

    def flow_from(self, side: _Side) -> _Flow:
        return self.up if side is self.client else self.down

    def flow_to(self, side: _Side) -> _Flow:
        return self.down if side is self.client else self.up

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.link.connections.add(self)
            assert side.transport is not None
            side.transport.pause_reading()  # until the target is reached
            self.link.loop.create_task(self._reach_target())
        else:
            assert self.client.transport is not None
            self.client.transport.resume_reading()
            self.up.pump()

    async def _reach_target(self) -> None:
        await asyncio.sleep(HANDSHAKE_RTTS * self.link.profile.rtt_s)
        if self.closed:
            return
        try:
            await self.link.loop.create_connection(
                lambda: self.target, self.link.target[0], self.link.target[1]
            )
        except OSError:
            self.abort()  # the target is down: so is the forwarded connection

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:
            self.abort()  # a reset on one side is a reset on the other
            return
        # A clean close: what the peer already sent still travels, then EOF.
        self.flow_from(side).receive(None)
        self.flow_to(side).cancel()
        self.flow_to(side).eof_delivered = True
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if self.up.eof_delivered and self.down.eof_delivered:
            self.close()

    def close(self) -> None:
        self._end(abort=False)

    def abort(self) -> None:
        self._end(abort=True)

    def _end(self, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.link.connections.discard(self)
        self.up.cancel()
        self.down.cancel()
        for side in (self.client, self.target):
            if side.transport is not None and not side.transport.is_closing():
                if abort:
                    side.transport.abort()
                else:
                    side.transport.close()


class Link:
    """Forward 127.0.0.1:``port`` to ``target`` across an emulated link; a context manager.

    ``bytes_up``/``bytes_down`` and ``reset_counters()`` match ``tests.support.relay.Relay``,
    so code that counts traffic works with either.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        profile: Profile,
        host: str = LOOPBACK,
        counters: Any = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.profile = profile
        self.host = host
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.connections: set[_Connection] = set()
        self._bottlenecks = {True: _Bottleneck(profile), False: _Bottleneck(profile)}
        #: [bytes up, bytes down, commands up] in shared memory, so a parent process
        #: can read them. Commands are those that ask the server for work (not NOOP or
        #: IDLE): round trips, where none is pipelined.
        self._counts = counters if counters is not None else _SPAWN.Array("q", 3)
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="bench-link", daemon=True)

    # -- public API, any thread --------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    @property
    def bytes_up(self) -> int:
        return int(self._counts[0])

    @property
    def bytes_down(self) -> int:
        return int(self._counts[1])

    @property
    def commands_up(self) -> int:
        return int(self._counts[2])

    @property
    def active_connections(self) -> int:
        return len(self.connections)

    def reset_counters(self) -> None:
        _reset_counters(self._counts)

    def close(self) -> None:
        """Reset every connection, stop listening, stop the loop; idempotent."""
        if self._thread.is_alive():
            self._call(self._shutdown())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(COMMAND_TIMEOUT)
        if not self.loop.is_closed() and not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- loop side ---------------------------------------------------------------------

    def bottleneck(self, upstream: bool) -> _Bottleneck:
        return self._bottlenecks[upstream]

    def count(self, upstream: bool, size: int, lines: int = 0) -> None:
        index = 0 if upstream else 1
        with self._counts.get_lock():
            self._counts[index] += size
            if upstream:
                self._counts[2] += lines

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(COMMAND_TIMEOUT)

    async def _listen(self) -> None:
        self._server = await self.loop.create_server(
            lambda: _Connection(self).client, self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        for task in asyncio.all_tasks(self.loop):
            if task is not asyncio.current_task():
                task.cancel()


class LinkProcess:
    """A ``Link`` in a child process, with the same counters; a context manager.

    The benchmark's client runs pure-Python parsing in the benchmark process; a link on a
    thread of that process would forward only when the client thread released the GIL,
    adding delay that a real network does not have. In its own process it cannot.
    """

    def __init__(
        self, target_host: str, target_port: int, profile: Profile, host: str = LOOPBACK
    ) -> None:
        self.target = (target_host, target_port)
        self.profile = profile
        self.host = host
        self.port = 0
        self._counts = _SPAWN.Array("q", 3)
        self._port = _SPAWN.Value("i", 0)
        self._ready = _SPAWN.Event()
        self._stop = _SPAWN.Event()
        self._process = _SPAWN.Process(
            target=_serve,
            args=(self.target, profile, host, self._counts, self._port, self._ready, self._stop),
            name="bench-link",
            daemon=True,
        )

    def start(self) -> Self:
        self._process.start()
        if not self._ready.wait(COMMAND_TIMEOUT) or not self._port.value:
            self.close()
            raise RuntimeError("the link process did not start listening")
        self.port = int(self._port.value)
        return self

    @property
    def bytes_up(self) -> int:
        return int(self._counts[0])

    @property
    def bytes_down(self) -> int:
        return int(self._counts[1])

    @property
    def commands_up(self) -> int:
        return int(self._counts[2])

    def reset_counters(self) -> None:
        _reset_counters(self._counts)

    def close(self) -> None:
        """Stop the child (its connections are reset) and wait for it; idempotent."""
        if self._process.pid is None:
            return
        self._stop.set()
        self._process.join(COMMAND_TIMEOUT)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(COMMAND_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _serve(
    target: tuple[str, int],
    profile: Profile,
    host: str,
    counts: Any,
    port: Any,
    ready: Any,
    stop: Any,
) -> None:
    """The child process of ``LinkProcess``: run the link until told to stop."""
    with Link(target[0], target[1], profile, host, counters=counts) as link:
        port.value = link.port
        ready.set()
        stop.wait()
