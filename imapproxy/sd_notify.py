"""Telling systemd how the proxy is doing (``Type=notify``), without a dependency.

The protocol is a few lines of text in one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (sd_notify(3)); a name starting with "@" is in the abstract
namespace. What we send:
- ``READY=1`` once every listener is up, so units ordered after us start only then
  and a failed start is a failed unit;
- ``STATUS=...`` with the current state (sessions, open accounts), refreshed as we go,
  for ``systemctl status``;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from the reactor itself, so a stuck
  event loop misses it and systemd restarts us (``WatchdogSec=``);
- ``STOPPING=1`` when shutting down.
Without ``$NOTIFY_SOCKET`` (not under systemd) all of it does nothing. A failed send
is logged once and never stops the proxy: being watched must not be a way to fail.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import task

log = logging.getLogger(__name__)

#: STATUS is refreshed this often when there is no watchdog tick to carry it.
STATUS_SECONDS = 30.0


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification; False when not under systemd or the send failed."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8", "replace"), address)
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 (half of what systemd allows), or None: no watchdog."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


class SystemdNotifier:
    """READY, STATUS, WATCHDOG and STOPPING for one run of the proxy."""

    def __init__(
        self,
        clock: Any,
        status: Callable[[], str],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.clock = clock
        self.status = status
        self.environ = dict(os.environ if environ is None else environ)
        self.enabled = bool(self.environ.get("NOTIFY_SOCKET"))
        self._loop: task.LoopingCall | None = None
        self._watchdog = watchdog_interval(self.environ)

    def ready(self) -> None:
        if not self.enabled:
            return
        self._send(f"READY=1\nSTATUS={self._status()}")
        interval = self._watchdog or STATUS_SECONDS
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(interval, now=False).addErrback(
            lambda failure: log.warning("systemd notifications stopped: %s", failure.value)
        )

    def _tick(self) -> None:
        if not self.enabled:
            return
        lines = [f"STATUS={self._status()}"]
        if self._watchdog is not None:
            lines.append("WATCHDOG=1")
        self._send("\n".join(lines))

    def stopping(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.enabled:
            self._send("STOPPING=1\nSTATUS=stopping")

    def _status(self) -> str:
        try:
            return " ".join(self.status().split())  # one line, whatever it says
        except Exception as exc:  # a status that cannot be told is not a failure
            return f"running (status unavailable: {type(exc).__name__})"

    def _send(self, message: str) -> None:
        if not notify(message, self.environ):
            self.enabled = False  # said once in the log; don't repeat it every tick
