"""Small socket helpers shared by the Dovecot, relay and proxy harnesses."""

from __future__ import annotations

import socket
import ssl
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free a moment ago.

    Binding port 0 lets the kernel choose, so parallel test runs do not collide on a fixed
    number; the tiny window between closing and the server binding it is acceptable here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_greeting(
    host: str,
    port: int,
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """Connect, read the server's first line, and hang up; raise OSError on failure.

    A listening socket alone is not proof of readiness: Dovecot's login process may still be
    starting, so callers wait for the actual ``* OK`` greeting line.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(raw, server_hostname="localhost")
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]


def wait_for_greeting(
    host: str,
    port: int,
    deadline: float,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """Poll until the server at host:port greets with ``* OK`` or ``deadline`` (monotonic) passes.

    Raises TimeoutError naming the last failure, so a broken setup says why it did not start.
    """
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        try:
            line = read_greeting(host, port, ssl_context=ssl_context)
            if line.startswith(b"* OK"):
                return line
            last_error = f"unexpected greeting {line!r}"
        except (OSError, ssl.SSLError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise TimeoutError(f"no IMAP greeting from {host}:{port}: {last_error}")
