"""The proxy's configuration, validated before anything listens or connects.

Each failure is a ConfigError whose message is the one line the user sees.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from imapproxy.server.tls import ServerTLS, ServerTLSError, load_server_tls
from imapproxy.upstream.address import AddressError, UpstreamAddress


class ConfigError(Exception):
    """A setting we cannot run with; the message says which and why."""


def default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; otherwise the XDG state home.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "imapproxy"


DEFAULT_LISTEN = "127.0.0.1:1143"


@dataclass(frozen=True)
class Listener:
    """One address clients connect to.

    ``implicit_tls``: TLS from the first byte (the port 993 style of RFC 8314), so the
    session is private before the greeting; otherwise the connection starts in clear and
    STARTTLS is offered when a certificate is configured.
    """

    host: str
    port: int
    implicit_tls: bool = False

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Config:
    upstream: UpstreamAddress
    listeners: tuple[Listener, ...]
    state_dir: Path
    upstream_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_append: int = 64 * 2**20
    allow_plaintext_listen: bool = False
    #: The loaded certificate and key (None without --tls-cert).
    server_tls: ServerTLS | None = field(default=None, compare=False, repr=False)

    @property
    def plain_listener(self) -> Listener | None:
        return next((lst for lst in self.listeners if not lst.implicit_tls), None)

    @property
    def tls_listener(self) -> Listener | None:
        return next((lst for lst in self.listeners if lst.implicit_tls), None)

    #: Failed-login delay: first step and ceiling (see login_limits).
    login_delay: float = 2.0
    login_delay_max: float = 15.0
    #: Seconds a client's change waits for the upstream's answer before it hears OK
    #: (the change is applied and queued either way; DESIGN.md "Writes go through the outbox").
    write_wait: float = 3.0

    @property
    def require_tls_for_login(self) -> bool:
        """Clients of the plain listener must STARTTLS before LOGIN/AUTHENTICATE: it is
        reachable from the network and we have a certificate, so nothing excuses a
        cleartext password (unless the user said the network is trusted). Sessions on the
        implicit-TLS listener are private from the start and need no such rule."""
        plain = self.plain_listener
        return (
            plain is not None
            and self.tls_cert is not None
            and not plain.loopback
            and not self.allow_plaintext_listen
        )

    @staticmethod
    def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1143")
        host = host.strip("[]")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: port must be a number") from None
        if not 0 <= number <= 65535:
            raise ConfigError(f"{flag} {text!r}: port out of range")
        return host, number

    @classmethod
    def build(
        cls,
        upstream: str,
        listen: str | None,
        state_dir: Path,
        upstream_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        allow_plaintext_listen: bool = False,
        listen_tls: str | None = None,
        login_delay: float = 2.0,
        login_delay_max: float = 15.0,
        write_wait: float = 3.0,
    ) -> Config:
        """``listen`` None and ``listen_tls`` None: the default plain listener on
        127.0.0.1:1143. Give ``listen_tls`` alone to listen with implicit TLS only."""
        try:
            address = UpstreamAddress.parse(upstream)
        except AddressError as exc:
            raise ConfigError(str(exc)) from None
        if listen is None and listen_tls is None:
            listen = DEFAULT_LISTEN
        listeners: list[Listener] = []
        if listen is not None:
            listeners.append(Listener(*cls.parse_listen(listen)))
        if listen_tls is not None:
            listeners.append(Listener(*cls.parse_listen(listen_tls, "--listen-tls"), True))
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if listen_tls is not None and tls_cert is None:
            raise ConfigError("--listen-tls needs a certificate: give --tls-cert and --tls-key")
        addresses = [(lst.host, lst.port) for lst in listeners if lst.port != 0]
        if len(set(addresses)) < len(addresses):
            raise ConfigError(
                f"--listen and --listen-tls both name {listeners[0].describe()}: "
                "give them different ports"
            )
        plain = next((lst for lst in listeners if not lst.implicit_tls), None)
        if (
            plain is not None
            and not plain.loopback
            and tls_cert is None
            and not allow_plaintext_listen
        ):
            raise ConfigError(
                f"refusing to listen on {plain.host} without TLS: passwords would cross the "
                "network in clear; give --tls-cert/--tls-key, or --allow-plaintext-listen on "
                "a trusted network"
            )
        for label, path in (
            ("--upstream-ca", upstream_ca),
            ("--tls-cert", tls_cert),
            ("--tls-key", tls_key),
        ):
            if path is not None and not path.is_file():
                raise ConfigError(f"{label} {path}: no such file")
        server_tls = None
        if tls_cert is not None and tls_key is not None:
            try:
                server_tls = load_server_tls(tls_cert, tls_key)
            except ServerTLSError as exc:
                raise ConfigError(str(exc)) from None
        if not 0 <= login_delay <= login_delay_max <= 3600:
            raise ConfigError(
                "--login-delay and --login-delay-max: need 0 <= delay <= max <= 3600 seconds"
            )
        if not 0 <= write_wait <= 600:
            raise ConfigError(f"--write-wait {write_wait}: expected 0 to 600 seconds")
        state_dir = _prepare_state_dir(state_dir)
        return cls(
            address,
            tuple(listeners),
            state_dir,
            upstream_ca,
            tls_cert,
            tls_key,
            allow_plaintext_listen=allow_plaintext_listen,
            server_tls=server_tls,
            login_delay=login_delay,
            login_delay_max=login_delay_max,
            write_wait=write_wait,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prepare_state_dir(path: Path) -> Path:
    """Create it 0700 (mail and verifiers live there) and make sure we can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"state directory {path}: {exc.strerror or exc}") from None
    return path
