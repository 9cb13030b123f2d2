"""A TCP relay between the proxy and Dovecot, to count and to break the upstream link.

Tests put it in front of Dovecot so they can (a) count the bytes the proxy exchanges with
the upstream server, which is how a cache proves it did not refetch, (b) ``cut()`` the
link (listener closed, every connection reset) to model a dead network, and (c)
``stall()`` it (data held, not forwarded) to model a link that hangs.

All socket work happens on one daemon I/O thread driven by a selector; other threads only
post commands to it and wait (bounded) until they have been carried out, so there are no
locks around sockets and no busy loops.
"""

from __future__ import annotations

import queue
import re
import selectors
import socket
import struct
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.support.net import LOOPBACK

BUFFER_LIMIT = 256 * 1024
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
_RST_LINGER = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST rather than a FIN, as a vanished peer or middlebox would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    except OSError:
        pass
    sock.close()


@dataclass
class CommandLog:
    """Command lines the proxy sent upstream, per relayed connection: pass ``tap`` as a
    Relay's tap, then read what was sent."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    partial: dict[object, bytes] = field(default_factory=lambda: defaultdict(bytes))
    #: (connection, command without its tag), in the order sent.
    sent: list[tuple[object, str]] = field(default_factory=list)
    #: The commands completed by each chunk the relay read: commands the proxy wrote
    #: at once (pipelined) arrive together on loopback.
    chunks: list[list[str]] = field(default_factory=list)

    def tap(self, key: object, data: bytes) -> None:
        with self.lock:
            *complete, self.partial[key] = (self.partial[key] + data).split(b"\r\n")
            chunk = []
            for line in complete:
                # Commands only, "TAG VERB ...": not literal data, not IDLE's DONE.
                if re.match(rb"^[A-Za-z0-9]+ [A-Z]", line):
                    chunk.append(line.split(b" ", 1)[1].decode("latin-1"))
                    self.sent.append((key, chunk[-1]))
            if chunk:
                self.chunks.append(chunk)

    def mark(self) -> int:
        with self.lock:
            return len(self.sent)

    def since(self, mark: int) -> list[str]:
        with self.lock:
            return [line for _, line in self.sent[mark:]]

    def per_connection(self) -> list[list[str]]:
        """Every command of each connection since it opened."""
        with self.lock:
            out: dict[object, list[str]] = defaultdict(list)
            for key, line in self.sent:
                out[key].append(line)
            return list(out.values())


class _Direction:
    """Bytes flowing one way through a link, buffered while the destination is busy."""

    def __init__(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        self.src = src
        self.dst = dst
        self.upstream = upstream
        self.buffer = bytearray()
        self.src_eof = False
        self.dst_shut = False
        #: Received bytes not yet known to be free of a line to drop (see Relay.drop_line).
        self.unchecked = bytearray()

    @property
    def done(self) -> bool:
        return self.src_eof and not self.buffer


class _Link:
    """One relayed connection: a client socket and its own socket to the target."""

    def __init__(self, client: socket.socket, target: socket.socket) -> None:
        self.client = client
        self.target = target
        self.up = _Direction(client, target, upstream=True)
        self.down = _Direction(target, client, upstream=False)

    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return self.client, self.target

    def reading_from(self, sock: socket.socket) -> _Direction:
        return self.up if sock is self.client else self.down

    def writing_to(self, sock: socket.socket) -> _Direction:
        return self.down if sock is self.client else self.up


class Relay:
    """Relay 127.0.0.1:``port`` to ``target_host``:``target_port``; a context manager.

    ``bytes_up`` counts client->target bytes and ``bytes_down`` target->client bytes, both
    as actually forwarded. ``cut()``/``resume()`` keep the same port, so a client that
    reconnects later finds the relay where it was.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        host: str = LOOPBACK,
        tap: Callable[[object, bytes], None] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        #: Called on the I/O thread with (connection key, bytes) for every chunk forwarded
        #: client->target, so a benchmark can count the commands a proxy sends upstream.
        self.tap = tap
        self.host = host
        self.port = 0
        self._counter_lock = threading.Lock()
        self._bytes_up = 0
        self._bytes_down = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], None], threading.Event, list[BaseException]]
        ] = queue.SimpleQueue()
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        #: Connections relayed since the start, however short they lived.
        self.connections_made = 0
        self._registered: dict[socket.socket, int] = {}
        self._stalled = False
        self._drop_prefix: re.Pattern[bytes] | None = None
        self._stall_on: re.Pattern[bytes] | None = None
        self._running = False
        self._thread = threading.Thread(target=self._loop, name="test-relay", daemon=True)

    # -- public API --------------------------------------------------------------------

    def start(self) -> Self:
        self._listen()
        self._running = True
        self._thread.start()
        return self

    @property
    def bytes_up(self) -> int:
        with self._counter_lock:
            return self._bytes_up

    @property
    def bytes_down(self) -> int:
        with self._counter_lock:
            return self._bytes_down

    @property
    def active_connections(self) -> int:
        """Number of currently relayed connections."""
        return len(self._links)

    def reset_counters(self) -> None:
        with self._counter_lock:
            self._bytes_up = 0
            self._bytes_down = 0

    def cut(self) -> None:
        """Close the listener and reset every relayed connection (a dead link)."""
        self._call(self._do_cut)

    def resume(self) -> None:
        """Listen again on the same port after ``cut()``; existing links stay gone."""
        self._call(self._listen)

    def stall(self) -> None:
        """Keep connections open but stop forwarding (a hanging link); data is held."""
        self._call(lambda: self._set_stalled(True))

    def unstall(self) -> None:
        """Forward again, including whatever arrived while stalled."""
        self._call(lambda: self._set_stalled(False))

    def drop_line(self, pattern: bytes) -> None:
        """Drop the next line from the target that matches the regex pattern (once): a
        server whose answer transiently lacks an entry, e.g. a mailbox missing from LIST."""
        self._call(lambda: setattr(self, "_drop_prefix", re.compile(pattern)))

    def stall_on(self, pattern: bytes) -> None:
        """Stall (as ``stall()``) as soon as the client sends bytes matching the regex
        pattern, holding them: a link that dies under a given command (once)."""
        self._call(lambda: setattr(self, "_stall_on", re.compile(pattern)))

    @property
    def stalled(self) -> bool:
        return self._stalled

    @property
    def line_dropped(self) -> bool:
        return self._drop_prefix is None

    def close(self) -> None:
        """Cut everything, stop the I/O thread and join it; idempotent."""
        if self._running:
            self._call(self._do_stop)
            self._thread.join(COMMAND_TIMEOUT)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands, run on the I/O thread -----------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        if not self._running:
            raise RuntimeError("relay is not running")
        done = threading.Event()
        errors: list[BaseException] = []
        self._commands.put((fn, done, errors))
        self._wake_w.send(b"\0")
        if not done.wait(COMMAND_TIMEOUT):
            raise TimeoutError("relay I/O thread did not respond")
        if errors:
            raise errors[0]

    def _listen(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ)

    def _do_cut(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for link in list(self._links):
            self._drop(link, reset=True)

    def _do_stop(self) -> None:
        self._do_cut()
        self._running = False

    def _set_stalled(self, stalled: bool) -> None:
        self._stalled = stalled
        for link in self._links:
            self._update_interest(link)

    # -- the I/O loop ------------------------------------------------------------------

    def _loop(self) -> None:
        while self._running:
            for key, mask in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._run_commands()
                elif sock is self._listener:
                    self._accept()
                elif isinstance(key.data, _Link) and key.data in self._links:
                    self._service(key.data, sock, mask)  # type: ignore[arg-type]
                if not self._running:
                    break

    def _run_commands(self) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        while True:
            try:
                fn, done, errors = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as exc:
                errors.append(exc)
            done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            target = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError:
            _reset(client)  # the target is down: so is the relayed connection
            return
        link = _Link(client, target)
        self.connections_made += 1
        for sock in link.sockets():
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._links.add(link)
        self._update_interest(link)

    def _service(self, link: _Link, sock: socket.socket, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(link.writing_to(sock))
            if mask & selectors.EVENT_READ:
                self._receive(link.reading_from(sock))
        except OSError:
            self._drop(link, reset=True)  # one side broke: the other side sees a reset
            return
        if link.up.done and link.down.done:
            self._drop(link, reset=False)
        else:
            self._update_interest(link)

    def _receive(self, direction: _Direction) -> None:
        try:
            data = direction.src.recv(65536)
        except BlockingIOError:
            return
        if data and direction.upstream and self._stall_on and self._stall_on.search(data):
            self._stall_on = None
            self._set_stalled(True)
        if data and not direction.upstream and (self._drop_prefix or direction.unchecked):
            self._filter(direction, data)
        elif data:
            direction.buffer += data
        else:
            direction.buffer += direction.unchecked
            direction.unchecked.clear()
            direction.src_eof = True
        self._flush(direction)

    def _count(self, direction: _Direction, delta: int) -> None:
        with self._counter_lock:
            if direction.upstream:
                self._bytes_up += delta
            else:
                self._bytes_down += delta

    def _filter(self, direction: _Direction, data: bytes) -> None:
        """Pass whole lines on, minus the one drop_line asked for."""
        direction.unchecked += data
        while self._drop_prefix is not None:
            end = direction.unchecked.find(b"\r\n")
            if end < 0:
                return
            line = bytes(direction.unchecked[: end + 2])
            del direction.unchecked[: end + 2]
            if self._drop_prefix.match(line):
                self._drop_prefix = None
            else:
                direction.buffer += line
        direction.buffer += direction.unchecked
        direction.unchecked.clear()

    def _flush(self, direction: _Direction) -> None:
        if direction.buffer and not self._stalled:
            # Counted before the send, the part not sent taken back after it: counted
            # after it, the receiver could act on the bytes (the proxy answer its client)
            # before they were counted, and a test read a count short by the last chunk.
            offered, sent = len(direction.buffer), 0
            self._count(direction, offered)
            try:
                sent = direction.dst.send(direction.buffer)
            except BlockingIOError:
                pass
            finally:
                self._count(direction, sent - offered)
            if sent and direction.upstream and self.tap is not None:
                self.tap(direction, bytes(direction.buffer[:sent]))
            del direction.buffer[:sent]
        if direction.done and not direction.dst_shut:
            direction.dst.shutdown(socket.SHUT_WR)  # pass the half-close on
            direction.dst_shut = True

    def _update_interest(self, link: _Link) -> None:
        for sock in link.sockets():
            incoming, outgoing = link.reading_from(sock), link.writing_to(sock)
            events = 0
            if not self._stalled and not incoming.src_eof and len(incoming.buffer) < BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if outgoing.buffer and not self._stalled:
                events |= selectors.EVENT_WRITE
            self._register(sock, events, link)

    def _register(self, sock: socket.socket, events: int, link: _Link) -> None:
        current = self._registered.get(sock, 0)
        if events == current:
            return
        if not events:
            self._selector.unregister(sock)
            del self._registered[sock]
        elif not current:
            self._selector.register(sock, events, link)
            self._registered[sock] = events
        else:
            self._selector.modify(sock, events, link)
            self._registered[sock] = events

    def _drop(self, link: _Link, reset: bool) -> None:
        self._links.discard(link)
        for sock in link.sockets():
            if self._registered.pop(sock, 0):
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
