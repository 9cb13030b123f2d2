"""sd_notify over a real AF_UNIX datagram socket, on a fake clock."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import task

from imapproxy.sd_notify import STATUS_SECONDS, SystemdNotifier, notify, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


def _received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_notify_sends_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1\nSTATUS=hi", {"NOTIFY_SOCKET": path})
    assert _received(sock) == ["READY=1\nSTATUS=hi"]


def test_abstract_socket_name() -> None:
    name = f"imapproxy-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert _received(sock) == ["READY=1"]


def test_not_under_systemd_does_nothing() -> None:
    assert notify("READY=1", {}) is False
    clock = task.Clock()
    notifier = SystemdNotifier(clock, lambda: "x", {})
    notifier.ready()
    assert clock.getDelayedCalls() == []
    notifier.stopping()


def test_a_socket_that_is_gone_does_not_fail_the_proxy(tmp_path: Path) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # meant for another
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(environ) == interval


def test_ready_status_watchdog_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = task.Clock()
    state = {"sessions": 0}
    notifier = SystemdNotifier(
        clock,
        lambda: f"{state['sessions']} sessions\n(second line)",
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"},
    )
    notifier.ready()
    assert _received(sock) == ["READY=1\nSTATUS=0 sessions (second line)"]
    state["sessions"] = 3
    clock.advance(1.0)
    assert _received(sock) == ["STATUS=3 sessions (second line)\nWATCHDOG=1"]
    clock.advance(1.0)
    assert _received(sock) == ["STATUS=3 sessions (second line)\nWATCHDOG=1"]
    notifier.stopping()
    assert _received(sock) == ["STOPPING=1\nSTATUS=stopping"]
    clock.advance(10)
    assert _received(sock) == [] and clock.getDelayedCalls() == []


def test_without_watchdog_status_is_refreshed_slowly(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = task.Clock()
    notifier = SystemdNotifier(clock, lambda: "fine", {"NOTIFY_SOCKET": path})
    notifier.ready()
    clock.advance(STATUS_SECONDS)
    assert _received(sock) == ["READY=1\nSTATUS=fine", "STATUS=fine"]
    notifier.stopping()


def test_a_failing_status_still_pings(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = task.Clock()

    def broken() -> str:
        raise RuntimeError("boom")

    notifier = SystemdNotifier(clock, broken, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    notifier.ready()
    clock.advance(1.0)
    messages = _received(sock)
    assert messages[0].startswith("READY=1\nSTATUS=running (status unavailable")
    assert messages[1].endswith("WATCHDOG=1")
    notifier.stopping()
