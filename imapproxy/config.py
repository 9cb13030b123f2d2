"""The proxy's configuration, validated before anything listens or connects.

Each failure is a ConfigError whose message is the one line the user sees.
"""

from __future__ import annotations

import ipaddress
import os
import re
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
    #: A socket systemd opened for us (socket activation), as a Twisted endpoint string
    #: such as ``systemd:domain=INET:name=imap``; host and port are then unknown until
    #: it is adopted, and the rules that depend on them are checked at start.
    endpoint: str | None = None

    @property
    def loopback(self) -> bool:
        return self.endpoint is None and _is_loopback(self.host)

    def describe(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


#: Accounts no session has used for this long are closed (their upstream connection
#: logged out, their runtime dropped); the next login opens them again.
DEFAULT_ACCOUNT_IDLE_SECONDS = 30 * 60.0


@dataclass(frozen=True)
class PrefetchSettings:
    """What is fetched ahead of time so it can be read offline: bodies of messages in
    ``folders`` (names, or special uses such as "Sent" for the folder marked \\Sent)
    received in the last ``max_age_days`` days and no larger than ``max_body_size``
    bytes. An empty ``folders`` turns prefetch off."""

    folders: tuple[str, ...] = ("INBOX", "Sent", "Drafts")
    max_age_days: int = 90
    max_body_size: int = 25 * 2**20


@dataclass(frozen=True)
class Freshness:
    """How stale the replica may get while the upstream is reachable: every folder is
    brought up to date at least every ``sync_interval`` seconds (0: only when a client
    looks); where the upstream lacks NOTIFY, each mailbox a client has selected is
    polled with STATUS every ``poll_interval`` seconds (with NOTIFY the upstream tells,
    within its own notification delay)."""

    sync_interval: float = 300.0
    poll_interval: float = 2.0


#: A day: long enough for a trip without a network, short enough that a token revoked
#: upstream stops opening the replica here within one (access tokens last about an hour
#: upstream; offline, the proxy cannot ask whether they were revoked).
DEFAULT_OFFLINE_TOKEN_LIFETIME = 86400.0
#: The most a configuration may ask for (offline_logins refuses longer-lived records).
MAX_OFFLINE_TOKEN_LIFETIME = 365 * 86400.0


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream server and the logins it serves.

    A login goes to the first upstream (in configuration order) whose ``listeners``
    include the address the client connected to (empty: any) and whose ``logins``
    patterns match the login name (shell-style, case-insensitive; empty: any name).
    A login that no upstream takes is refused without any upstream hearing of it.
    """

    name: str
    address: UpstreamAddress
    ca_file: Path | None = None
    logins: tuple[str, ...] = ()
    #: Listener addresses as ``Listener.describe()`` spells them.
    listeners: tuple[str, ...] = ()
    prefetch: PrefetchSettings = PrefetchSettings()
    #: Bytes of cached message content per account; None: no limit.
    cache_limit: int | None = None
    freshness: Freshness = Freshness()
    #: Seconds a token this upstream accepted may log its user in again offline
    #: (shortened to the token's own expiry when it is a JWT); 0: never offline.
    offline_token_lifetime: float = DEFAULT_OFFLINE_TOKEN_LIFETIME
    #: Its users log in with OAuth2: ask it at startup which mechanisms it offers, so
    #: they are advertised before anyone has logged in (without it they are learned
    #: from the first login connection, and remembered).
    oauth: bool = False
    #: Encrypt the replica of its accounts at rest (store/keyring.py): accounts created
    #: from now on, and clear ones at their next login the upstream accepts. An
    #: encrypted account stays encrypted if this is turned off later.
    encrypt: bool = False


@dataclass(frozen=True)
class Config:
    listeners: tuple[Listener, ...]
    state_dir: Path
    upstreams: tuple[UpstreamConfig, ...]
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_append: int = 64 * 2**20
    allow_plaintext_listen: bool = False
    #: Seconds without any session before an account is closed; 0: never.
    account_idle_seconds: float = DEFAULT_ACCOUNT_IDLE_SECONDS
    #: Failed-login delay: first step and ceiling (see login_limits).
    login_delay: float = 2.0
    login_delay_max: float = 15.0
    #: Seconds a client's change waits for the upstream's answer before it hears OK
    #: (the change is applied and queued either way; DESIGN.md "Writes go through the outbox").
    write_wait: float = 3.0
    #: Where Prometheus scrapes ``/metrics`` (plain HTTP); None: no exporter.
    metrics: Listener | None = None
    #: The exporter may listen beyond loopback (it names no user, but shows activity).
    metrics_allow_remote: bool = False
    #: The loaded certificate and key (None without --tls-cert).
    server_tls: ServerTLS | None = field(default=None, compare=False, repr=False)

    @property
    def upstream(self) -> UpstreamAddress:
        """The first upstream's address (the only one when configured by flags)."""
        return self.upstreams[0].address

    @property
    def upstream_ca(self) -> Path | None:
        return self.upstreams[0].ca_file

    @property
    def plain_listener(self) -> Listener | None:
        return next((lst for lst in self.listeners if not lst.implicit_tls), None)

    @property
    def tls_listener(self) -> Listener | None:
        return next((lst for lst in self.listeners if lst.implicit_tls), None)

    def requires_tls_for_login(self, listener: Listener) -> bool:
        """Clients of a plain listener must STARTTLS before LOGIN/AUTHENTICATE when it
        is reachable from the network and we have a certificate, so nothing excuses a
        cleartext password (unless the user said the network is trusted). Sessions on
        an implicit-TLS listener are private from the start and need no such rule."""
        return (
            not listener.implicit_tls
            and self.tls_cert is not None
            and not listener.loopback
            and not self.allow_plaintext_listen
        )

    @property
    def require_tls_for_login(self) -> bool:
        """Whether any plain listener requires STARTTLS before a login."""
        return any(self.requires_tls_for_login(lst) for lst in self.listeners)

    @staticmethod
    def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
        return parse_listen(text, flag)

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
        account_idle_seconds: float = DEFAULT_ACCOUNT_IDLE_SECONDS,
        metrics: str | None = None,
        metrics_allow_remote: bool = False,
        oauth: bool = False,
        cache_limit: int | None = None,
        encrypt: bool = False,
    ) -> Config:
        """The command line's one-upstream configuration. ``listen`` None and
        ``listen_tls`` None: the default plain listener on 127.0.0.1:1143. Give
        ``listen_tls`` alone to listen with implicit TLS only."""
        try:
            address = UpstreamAddress.parse(upstream)
        except AddressError as exc:
            raise ConfigError(str(exc)) from None
        if listen is None and listen_tls is None:
            listen = DEFAULT_LISTEN
        listeners: list[Listener] = []
        if listen is not None:
            listeners.append(make_listener(listen, "--listen", False))
        if listen_tls is not None:
            listeners.append(make_listener(listen_tls, "--listen-tls", True))
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if listen_tls is not None and tls_cert is None:
            raise ConfigError("--listen-tls needs a certificate: give --tls-cert and --tls-key")
        addresses = [lst.describe() for lst in listeners if lst.port != 0 or lst.endpoint]
        if len(set(addresses)) < len(addresses):
            raise ConfigError(
                f"--listen and --listen-tls both name {listeners[0].describe()}: "
                "give them different ports"
            )
        for listener in listeners:
            check_plaintext_listener(
                listener, tls_cert is not None, allow_plaintext_listen, "--tls-cert/--tls-key"
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
        metrics_listener = (
            None
            if metrics is None
            else make_metrics_listener(
                metrics, "--metrics", metrics_allow_remote, "--metrics-allow-remote"
            )
        )
        state_dir = prepare_state_dir(state_dir)
        return cls(
            tuple(listeners),
            state_dir,
            (
                UpstreamConfig(
                    "default",
                    address,
                    upstream_ca,
                    oauth=oauth,
                    cache_limit=cache_limit,
                    encrypt=encrypt,
                ),
            ),
            tls_cert,
            tls_key,
            allow_plaintext_listen=allow_plaintext_listen,
            account_idle_seconds=account_idle_seconds,
            server_tls=server_tls,
            login_delay=login_delay,
            login_delay_max=login_delay_max,
            write_wait=write_wait,
            metrics=metrics_listener,
            metrics_allow_remote=metrics_allow_remote,
        )


def make_metrics_listener(text: str, flag: str, allow_remote: bool, allow_flag: str) -> Listener:
    """HOST:PORT of the metrics exporter: loopback unless ``allow_remote``."""
    listener = Listener(*parse_listen(text, flag))
    if not listener.loopback and not allow_remote:
        raise ConfigError(
            f"{flag} {text!r}: refusing to serve metrics beyond loopback (they show who is "
            f"busy and when the link is down); give {allow_flag} to do it anyway"
        )
    return listener


_SYSTEMD_ENDPOINT = re.compile(r"systemd:domain=(INET|INET6|UNIX):(index=\d+|name=[\w.-]+)")


def make_listener(text: str, flag: str, implicit_tls: bool) -> Listener:
    """HOST:PORT, or a socket from systemd: ``systemd:domain=INET:name=NAME`` (the
    ``FileDescriptorName=`` of the socket unit) or ``...:index=N``."""
    if text.startswith("systemd:"):
        if not _SYSTEMD_ENDPOINT.fullmatch(text):
            raise ConfigError(
                f"{flag} {text!r}: expected systemd:domain=INET:name=NAME (or index=N; "
                "domain INET, INET6 or UNIX)"
            )
        return Listener("", 0, implicit_tls, endpoint=text)
    return Listener(*parse_listen(text, flag), implicit_tls)


def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets); ``flag`` names the setting in errors."""
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


def check_plaintext_listener(
    listener: Listener, has_cert: bool, allow_plaintext: bool, cert_setting: str
) -> None:
    """Passwords never cross a network in clear unless the user says it is trusted.
    A socket from systemd is checked once adopted, when its address is known."""
    if listener.implicit_tls or listener.loopback or has_cert or allow_plaintext:
        return
    if listener.endpoint is not None:
        return
    allow = (
        "--allow-plaintext-listen" if cert_setting.startswith("--") else "allow_plaintext_listen"
    )
    raise ConfigError(
        f"refusing to listen on {listener.host} without TLS: passwords would cross the "
        f"network in clear; give {cert_setting}, or {allow} on a trusted network"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare_state_dir(path: Path) -> Path:
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
