"""``./scripts/demo``: try the proxy without an account, and watch offline mode work.

Starts a throwaway Dovecot seeded with the test corpus (the standard account: a busy
INBOX, nested and non-ASCII folders, attachments), a relay between the proxy and that
Dovecot, and ``imapproxy serve`` in front of the relay; then prints how to connect and
how to cut and restore the link. It is built from the test suite's own fixtures, so it
runs from a checkout (``scripts/demo`` prepares the venv and Dovecot first).

The running demo listens on a small control socket (a Unix socket, owner-only), so
``./scripts/demo cut`` and ``./scripts/demo restore`` in another terminal are all a user
types; a terminal's own stdin is not needed, so the demo also runs in the background.
Ctrl-C or SIGTERM stops everything and removes every file it made.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from tests.support.corpus import seed_standard_account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK, free_port
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

USER = "demo"
PASSWORD = "demo-pw"
DEFAULT_PORT = 1143
COMMANDS = ("cut", "restore", "status")


def default_control_path() -> Path:
    """Per user, so two users on one machine each get their own demo."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"imapproxy-demo-{os.getuid()}.sock"


class Link:
    """The relay plus the words the control socket answers with."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.cut = False
        self._lock = threading.Lock()

    def command(self, word: str) -> str:
        with self._lock:
            if word == "cut":
                if not self.cut:
                    self.relay.cut()
                    self.cut = True
                return "link cut: the proxy is offline (reads from its cache, queues changes)"
            if word == "restore":
                if self.cut:
                    self.relay.resume()
                    self.cut = False
                return "link restored: the proxy reconnects and replays queued changes"
            if word == "status":
                return "link is cut" if self.cut else "link is up"
        return f"unknown command {word!r}: expected one of {', '.join(COMMANDS)}"


class ControlServer:
    """A Unix socket answering one command line per connection with one line."""

    def __init__(self, path: Path, link: Link) -> None:
        self.path = path
        self.link = link
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # owner-only: other users may not cut our link
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, name="demo-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by close()
            with conn:
                conn.settimeout(5)
                try:
                    word = conn.makefile("r", encoding="utf-8").readline().strip()
                    reply = self.link.command(word)
                except Exception as exc:  # one bad request must not stop the control socket
                    reply = f"error: {type(exc).__name__}"
                with contextlib.suppress(OSError):
                    conn.sendall(reply.encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.path.unlink(missing_ok=True)


def send_command(path: Path, word: str) -> str:
    """Ask the running demo to ``cut``/``restore``; raises OSError when none runs."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(word.encode() + b"\n")
        return sock.makefile("r", encoding="utf-8").readline().strip()


def _demo_running(path: Path) -> bool:
    try:
        send_command(path, "status")
    except OSError:
        return False
    return True


def _command_hint(control: Path) -> str:
    script = "./scripts/demo"
    if control != default_control_path():
        script += f" --control {control}"
    return script


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (the main thread then cleans up)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(control: Path, port: int) -> int:
    if _demo_running(control):
        print(f"demo: a demo is already running ({_command_hint(control)} status)", file=sys.stderr)
        return 1
    control.unlink(missing_ok=True)  # a stale socket from a demo that was killed
    workdir = Path(tempfile.mkdtemp(prefix="imapproxy-demo-"))
    with contextlib.ExitStack() as cleanup, _stop_signals() as stop:
        cleanup.callback(shutil.rmtree, workdir, True)
        print("demo: starting Dovecot and seeding mail ...", flush=True)
        dovecot = Dovecot(users={USER: PASSWORD})
        cleanup.callback(dovecot.stop)  # removes its own directory
        dovecot.start()
        seed_standard_account(dovecot, USER)
        relay = Relay(dovecot.host, dovecot.port).start()
        cleanup.callback(relay.close)
        proxy = ProxyProcess(
            f"imap+plain://{relay.host}:{relay.port}",
            workdir / "state",
            listen_port=port,
            # Offline changes answer within a second instead of the default three.
            extra_args=("--write-wait", "1"),
        )
        cleanup.callback(proxy.stop)
        proxy.start()
        server = ControlServer(control, Link(relay))
        cleanup.callback(server.close)
        server.start()
        hint = _command_hint(control)
        print(
            f"""
imapproxy demo is running. Point a mail client (or `telnet {proxy.host} {proxy.port}`) at it:

  host:      {proxy.host}
  port:      {proxy.port}
  user:      {USER}
  password:  {PASSWORD}
  security:  none (plain IMAP on loopback)

Cut the link to the server (the proxy goes offline):  {hint} cut
Restore it (queued changes are replayed):             {hint} restore
The server itself, bypassing the proxy:               {dovecot.host}:{dovecot.port}
The proxy's log:                                      {proxy.log_path}

Press Ctrl-C to stop; everything is removed.
demo: ready""",
            flush=True,
        )
        while not stop.wait(0.5):
            if not proxy.running:
                print(f"demo: the proxy exited:\n{proxy.log_tail()}", file=sys.stderr)
                return 1
        print("demo: stopping ...", flush=True)
    print("demo: stopped, nothing left behind", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="A throwaway Dovecot with mail, and imapproxy in front of it.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", *COMMANDS),
        default="run",
        help="run the demo (default), or tell the running demo to cut/restore its link",
    )
    parser.add_argument(
        "--control", type=Path, default=None, help="the control socket (default: per user)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"the proxy's port on {LOOPBACK} (default {DEFAULT_PORT}, or any free one)",
    )
    args = parser.parse_args(argv)
    control = args.control or default_control_path()
    if args.command != "run":
        try:
            print(send_command(control, args.command))
        except OSError:
            print(f"demo: no demo is running (no answer on {control})", file=sys.stderr)
            return 1
        return 0
    port = args.port
    if port is None:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()
    return run(control, port)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
