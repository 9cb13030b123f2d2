"""The proxy's configuration, validated before anything listens or connects.

Each failure is a ConfigError whose message is the one line the user sees.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Config:
    upstream: UpstreamAddress
    listen_host: str
    listen_port: int
    state_dir: Path
    upstream_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_append: int = 64 * 2**20
    allow_plaintext_listen: bool = False
    #: Seconds a client's change waits for the upstream's answer before it hears OK
    #: (the change is applied and queued either way; DESIGN.md "Writes go through the outbox").
    write_wait: float = 3.0

    @property
    def require_tls_for_login(self) -> bool:
        """Clients must STARTTLS before LOGIN/AUTHENTICATE: the listener is reachable
        from the network and we have a certificate, so nothing excuses a cleartext password
        (unless the user said the network is trusted)."""
        return (
            self.tls_cert is not None
            and not _is_loopback(self.listen_host)
            and not self.allow_plaintext_listen
        )

    @staticmethod
    def parse_listen(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1143")
        host = host.strip("[]")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"--listen {text!r}: port must be a number") from None
        if not 0 <= number <= 65535:
            raise ConfigError(f"--listen {text!r}: port out of range")
        return host, number

    @classmethod
    def build(
        cls,
        upstream: str,
        listen: str,
        state_dir: Path,
        upstream_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        allow_plaintext_listen: bool = False,
        write_wait: float = 3.0,
    ) -> Config:
        try:
            address = UpstreamAddress.parse(upstream)
        except AddressError as exc:
            raise ConfigError(str(exc)) from None
        host, port = cls.parse_listen(listen)
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if not _is_loopback(host) and tls_cert is None and not allow_plaintext_listen:
            raise ConfigError(
                f"refusing to listen on {host} without TLS: passwords would cross the network in "
                "clear; give --tls-cert/--tls-key, or --allow-plaintext-listen on a trusted network"
            )
        for label, path in (
            ("--upstream-ca", upstream_ca),
            ("--tls-cert", tls_cert),
            ("--tls-key", tls_key),
        ):
            if path is not None and not path.is_file():
                raise ConfigError(f"{label} {path}: no such file")
        if not 0 <= write_wait <= 600:
            raise ConfigError(f"--write-wait {write_wait}: expected 0 to 600 seconds")
        state_dir = _prepare_state_dir(state_dir)
        return cls(
            address,
            host,
            port,
            state_dir,
            upstream_ca,
            tls_cert,
            tls_key,
            allow_plaintext_listen=allow_plaintext_listen,
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
