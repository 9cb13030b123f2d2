"""Run the real ``imapproxy serve`` as a subprocess, the way a user would.

Integration tests talk to the proxy over TCP only, so they test the shipped CLI and event
loop rather than in-process objects, and a crash or hang in the proxy cannot take the
test runner down with it. Output goes to a log file (never an unread pipe, which would
block the proxy once the pipe buffer fills); ``log_text()`` returns this run's part.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from tests.support.net import LOOPBACK, can_connect, free_port

if TYPE_CHECKING:
    from tests.support.relay import Relay
    from tests.support.tlscert import CertPair

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
READY_MARKER = "ready"


class ProxyProcess:
    """``imapproxy serve`` listening on 127.0.0.1:``port``, relaying to ``upstream_url``.

    With ``tls`` (a CertPair) the proxy offers that certificate; with ``listen_tls`` it
    also listens with implicit TLS on ``tls_port``; ``listen_plain=False`` drops ``--listen``.

    ``command`` replaces ``python -m imapproxy`` (the harness's own tests use a stand-in).
    Restarting with the same ``state_dir`` is how tests check what survives a restart.
    """

    def __init__(
        self,
        upstream_url: str,
        state_dir: Path,
        listen_port: int | None = None,
        upstream_ca: Path | None = None,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        *,
        tls: CertPair | None = None,
        listen_tls: bool = False,
        listen_plain: bool = True,
    ) -> None:
        self.upstream_url = upstream_url
        self.state_dir = state_dir
        self.host = LOOPBACK
        self.port = listen_port or free_port()
        #: ``--tls-cert``/``--tls-key``: STARTTLS on ``port``, and what ``tls_port`` serves.
        self.tls = tls
        #: The implicit-TLS port (``--listen-tls``), or None.
        self.tls_port = free_port() if listen_tls else None
        #: False: no ``--listen`` at all (only ``--listen-tls``), ``port`` is unused.
        self.listen_plain = listen_plain
        self.upstream_ca = upstream_ca
        self.extra_args = tuple(extra_args)
        self.command = tuple(command or (sys.executable, "-m", "imapproxy"))
        self.log_path = state_dir.parent / f"{state_dir.name}.proxy.log"
        self.returncode: int | None = None
        #: Set by fixtures that route the upstream link through a ``Relay``.
        self.relay: Relay | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def argv(self) -> list[str]:
        args = [*self.command, "serve", "--upstream", self.upstream_url]
        if self.listen_plain:
            args += ["--listen", f"{self.host}:{self.port}"]
        if self.tls_port is not None:
            args += ["--listen-tls", f"{self.host}:{self.tls_port}"]
        if self.tls is not None:
            args += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        args += ["--state-dir", str(self.state_dir)]
        if self.upstream_ca is not None:
            args += ["--upstream-ca", str(self.upstream_ca)]
        return [*args, *self.extra_args]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until it accepts connections and has logged ``ready``."""
        if self.running:
            raise RuntimeError("proxy already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.returncode = None
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"=== starting: {' '.join(self.argv())}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.returncode = self._process.returncode
                self._process = None
                raise RuntimeError(
                    f"imapproxy exited with {self.returncode} during startup:\n{self.log_tail()}"
                )
            if self._logged_ready() and all(can_connect(self.host, p) for p in self.ports()):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"imapproxy not ready on {self.host}:{self.ports()} after {START_TIMEOUT:.0f}s "
            f"(needs a listening socket and a log line containing {READY_MARKER!r}):\n"
            f"{self.log_tail()}"
        )

    def ports(self) -> list[int]:
        """Every port this proxy listens on."""
        ports = [self.port] if self.listen_plain else []
        return ports + ([self.tls_port] if self.tls_port is not None else [])

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this proxy's (self-signed) certificate, and
        checks the name (the certificate names localhost and 127.0.0.1)."""
        if self.tls is None:
            raise RuntimeError("this proxy has no certificate (pass tls=CertPair)")
        return ssl.create_default_context(cafile=str(self.tls.cert))

    def _logged_ready(self) -> bool:
        # Skip our own "=== starting" header: its paths could contain the word.
        return any(
            READY_MARKER in line
            for line in self.log_text().splitlines()
            if not line.startswith("=== ")
        )

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s (then SIGKILL), record and return ``returncode``."""
        process = self._process
        if process is None:
            return self.returncode
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self.returncode = process.returncode
        return self.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        """Everything the current (or last) run wrote to stdout/stderr."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, count: int = 1, seconds: float = 30) -> None:
        """Wait until this run has logged text count times (e.g. a background sync's end)."""
        deadline = time.monotonic() + seconds
        while self.log_text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the proxy log:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
