"""A throwaway Dovecot IMAP server for integration tests and benchmarks.

The proxy's behaviour only means something against a real server, so the suite runs the
distribution's Dovecot with a private config (see ``dovecot_config``) instead of a mock.
Usage::

    with Dovecot(tmp_dir, users={"alice": "alice-pw"}) as dovecot:
        imaplib.IMAP4(dovecot.host, dovecot.port)

Facts this relies on are collected in shared/TESTING.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.dovecot_config import (
    ConfigPaths,
    MailUser,
    oauth2_settings,
    render_config,
    resolve_mail_user,
)
from tests.support.net import LOOPBACK, free_port, wait_for_greeting
from tests.support.tlscert import CertPair, make_self_signed

INSTALL_HINT = "run ./scripts/test (it installs Dovecot) or `apt-get install dovecot-imapd`"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def find_dovecot() -> str:
    """Return the path of the ``dovecot`` binary or raise with install instructions.

    /usr/sbin is searched explicitly because it is often missing from a normal user's PATH.
    Integration tests must fail loudly rather than skip when it is absent.
    """
    path = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(f"dovecot is not installed: {INSTALL_HINT}")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_traversable(directory: Path, user: MailUser) -> None:
    """Make ``directory`` world-traversable and check its ancestors are too.

    Mail processes run as the mail user, which must reach the maildirs and the passwd file
    below ``directory``. Ancestors are only checked, never changed: silently opening up,
    say, pytest's private 0700 base directory would be a surprise.
    """
    directory.chmod(0o755)
    for parent in directory.resolve().parents:
        st = parent.stat()
        if st.st_uid != user.uid and not st.st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is not traversable by {user.name!r} (mode {st.st_mode & 0o777:o}); "
                "give Dovecot a directory under a world-traversable path such as /tmp"
            )


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Dovecot:
    """One private Dovecot instance listening on loopback, with plain and implicit-TLS ports.

    ``directory`` receives the config, cert, logs, passwd file and maildirs. When omitted, a
    fresh directory under the system temp dir is created and removed again by ``stop()``.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        directory: Path | None = None,
        users: dict[str, str] | None = None,
        cert: CertPair | None = None,
        *,
        default_auth_penalty: bool = False,
        without_capabilities: tuple[str, ...] = (),
        oauth2_introspection: str | None = None,
        extra_capabilities: tuple[str, ...] = (),
        compress: bool = False,
    ) -> None:
        """cert: the server certificate to present (TLS tests make it wrong on purpose);
        by default a fresh self-signed one that is also the CA file."""
        self._binary = find_dovecot()
        self._owns_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="imapproxy-dovecot-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.paths = ConfigPaths(directory)
        self.mail_user: MailUser = resolve_mail_user()
        self.users: dict[str, str] = {}
        self.port = 0
        self.tls_port = 0
        self.ca_file = directory / "server.pem"
        self._cert = cert
        self._master_pid: int | None = None
        #: Keep Dovecot's own failed-login delays (see ``render_config``); off by default.
        self.default_auth_penalty = default_auth_penalty
        #: Extensions hidden from the post-login CAPABILITY (e.g. ``("NOTIFY",)``).
        self.without_capabilities = without_capabilities
        #: A token introspection URL: XOAUTH2/OAUTHBEARER logins are checked there.
        self.oauth2_introspection = oauth2_introspection
        #: Extensions added to it (announced only: e.g. ``("CREATE-SPECIAL-USE",)``).
        self.extra_capabilities = extra_capabilities
        #: Load imap_zlib and offer COMPRESS=DEFLATE.
        self.compress = compress
        for user, password in (users or {}).items():
            self.add_user(user, password)

    # -- users and mail ----------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        """Add a login; works before ``start()`` and on a running server.

        Each user has its own passwd-file, which a live Dovecot reads at the user's first
        login, so a new user can log in at once. Changing an existing user's password on
        a live server can take up to a second to be seen (Dovecot's re-check interval).
        The file is replaced atomically so a concurrent login never reads half of it.
        """
        if not user or any(c in user for c in ":/\n%") or user.startswith("."):
            raise ValueError(f"unusable user name {user!r}")
        if "\n" in password:
            raise ValueError("password must be a single line")
        self.users[user] = password
        self.paths.passwd.mkdir(mode=0o755, exist_ok=True)
        tmp = self.paths.passwd / f".{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{password}\n", encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(self.paths.passwd / user)

    def mail_root(self, user: str) -> Path:
        """The user's Maildir root (its INBOX); other mailboxes are ``.Name`` folders in it."""
        return self.paths.mail / user / "Maildir"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this instance's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Write the config, start the master and wait until both ports greet."""
        if self._master_pid is not None:
            raise RuntimeError("Dovecot already started")
        _ensure_traversable(self.directory, self.mail_user)
        self._prepare_files()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOVECOT")}
        # The master daemonizes and its children inherit our stdout/stderr: give it a file,
        # never a pipe, or whoever waits for EOF on that pipe hangs until Dovecot exits.
        with self.paths.startup_log.open("ab") as out:
            proc = subprocess.run(
                [self._binary, "-c", str(self.paths.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=START_TIMEOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(
                f"dovecot failed to start (exit {proc.returncode}):\n{self.log_tail()}"
            )
        deadline = time.monotonic() + START_TIMEOUT
        self._master_pid = self._read_master_pid(deadline)
        try:
            wait_for_greeting(self.host, self.port, deadline)
            # A certificate made wrong on purpose would fail a verifying readiness check.
            context = self.ssl_context() if self._cert is None else _unverified_context()
            wait_for_greeting(self.host, self.tls_port, deadline, ssl_context=context)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """Stop the master (SIGTERM) and wait, bounded, for it to exit; idempotent."""
        pid = self._master_pid
        self._master_pid = None
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._master_pid is not None and _pid_alive(self._master_pid)

    def log_tail(self, lines: int = 40) -> str:
        """The end of Dovecot's logs (startup output and main log), for error messages."""
        parts = []
        for path in (self.paths.startup_log, self.paths.log):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no dovecot log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------

    def _prepare_files(self) -> None:
        paths = self.paths
        for sub in (paths.base_dir, paths.state_dir):
            sub.mkdir(mode=0o755, exist_ok=True)
        paths.mail.mkdir(mode=0o755, exist_ok=True)
        os.chown(paths.mail, self.mail_user.uid, self.mail_user.gid)
        paths.passwd.mkdir(mode=0o755, exist_ok=True)
        if self._cert is None:
            pair = make_self_signed(self.directory, "server")
            self.ca_file = pair.cert
        else:
            pair = self._cert
        self.port = free_port(self.host)
        self.tls_port = free_port(self.host)
        while self.tls_port == self.port:
            self.tls_port = free_port(self.host)
        paths.conf.write_text(
            render_config(
                paths,
                instance_name=f"imapproxy-test-{uuid.uuid4().hex[:10]}",
                port=self.port,
                tls_port=self.tls_port,
                cert=pair.cert,
                key=pair.key,
                user=self.mail_user,
                host=self.host,
                default_auth_penalty=self.default_auth_penalty,
                without_capabilities=self.without_capabilities,
                oauth2_introspection=self.oauth2_introspection,
                extra_capabilities=self.extra_capabilities,
                compress=self.compress,
            ),
            encoding="utf-8",
        )
        if self.oauth2_introspection is not None:
            paths.oauth2.write_text(oauth2_settings(self.oauth2_introspection), encoding="utf-8")
            paths.oauth2.chmod(0o644)

    def _read_master_pid(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            try:
                return int(self.paths.master_pid.read_text().strip())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"dovecot wrote no master.pid\n{self.log_tail()}")
