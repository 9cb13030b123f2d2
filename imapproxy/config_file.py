"""The configuration file (``imapproxy serve --config FILE``, ``imapproxy check-config``).

TOML, read with the standard library's ``tomllib``, into the same frozen ``Config`` the
command-line flags build. Every mistake is reported with its line, all of them at once
(a user fixing a file wants the whole list): a syntax error with the line ``tomllib``
names, anything else with the line of the key at fault (found by ``config_lines``).
Unknown keys are errors, so a typo never silently leaves a default in place.

Relative paths are taken relative to the file's own directory, so a configuration
works whatever directory the proxy is started from. ``examples/imapproxy.toml`` is a
complete, commented example.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from imapproxy.config import (
    DEFAULT_ACCOUNT_IDLE_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_OFFLINE_TOKEN_LIFETIME,
    MAX_OFFLINE_TOKEN_LIFETIME,
    Config,
    ConfigError,
    Freshness,
    Listener,
    PrefetchSettings,
    UpstreamConfig,
    check_plaintext_listener,
    default_state_dir,
    make_listener,
    make_metrics_listener,
    parse_listen,
    prepare_state_dir,
)
from imapproxy.config_lines import KeyLines, KeyPath
from imapproxy.server.tls import ServerTLS, ServerTLSError, load_server_tls
from imapproxy.upstream.address import AddressError, UpstreamAddress
from imapproxy.upstream.tls import check_ca_file

T = TypeVar("T")

SERVER_KEYS = {
    "state_dir",
    "listen",
    "listen_tls",
    "tls_cert",
    "tls_key",
    "allow_plaintext_listen",
    "account_idle_timeout",
    "login_delay",
    "login_delay_max",
    "write_wait",
    "metrics",
    "metrics_allow_remote",
}
UPSTREAM_KEYS = {
    "name",
    "url",
    "ca_file",
    "logins",
    "listeners",
    "cache_limit",
    "prefetch",
    "freshness",
    "offline_token_lifetime",
    "oauth",
    "encrypt",
}
PREFETCH_KEYS = {"folders", "max_age_days", "max_body_size"}
FRESHNESS_KEYS = {"sync_interval", "poll_interval"}

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str


class ConfigFileError(ConfigError):
    """Everything wrong with one file; ``str()`` is one ``FILE:LINE: message`` per problem."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [
            f"{self.path}:{p.line}: {p.message}" if p.line else f"{self.path}: {p.message}"
            for p in self.problems
        ]


def load(path: Path, *, prepare: bool = True) -> Config:
    """Read and check ``path``. ``prepare``: create the state directory (serve); without
    it nothing on disk changes (check-config). Raises ConfigFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigFileError(path, [Problem(None, f"cannot read it: {reason or exc}")]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise ConfigFileError(path, [Problem(line, f"not valid TOML: {exc}")]) from None
    reader = _Reader(KeyLines(text), path.resolve().parent)
    config = reader.config(document, prepare)
    if reader.problems or config is None:
        raise ConfigFileError(path, sorted(reader.problems, key=lambda p: p.line or 0))
    return config


def summary(config: Config) -> str:
    """The one line check-config prints for a valid file."""
    listeners = ", ".join(
        f"{lst.describe()}{' (TLS)' if lst.implicit_tls else ''}" for lst in config.listeners
    )
    upstreams = ", ".join(
        f"{u.name} ({u.address.url()}{', encrypted' if u.encrypt else ''})"
        for u in config.upstreams
    )
    count = len(config.upstreams)
    return (
        f"configuration OK: listening on {listeners}; {count} upstream"
        f"{'s' if count != 1 else ''}: {upstreams}; state in {config.state_dir}"
    )


def parse_size(value: object) -> int:
    """Bytes: an integer, or a string such as "25M", "2 GiB" (binary multiples)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number: float = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    else:
        raise ValueError('expected a size: bytes, or a string such as "25M" or "2G"')
    if number < 0:
        raise ValueError("a size cannot be negative")
    return int(number)


def parse_duration(value: object) -> float:
    """Seconds: a number, or a string such as "90s", "30m", "2h", "1d"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]
    else:
        raise ValueError('expected a duration: seconds, or a string such as "30m" or "2h"')
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds, 0 or more")
    return seconds


class _Reader:
    """Checks one parsed document, collecting problems instead of stopping at the first."""

    def __init__(self, lines: KeyLines, base: Path) -> None:
        self.lines = lines
        self.base = base
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.lines.line(path), message))

    # the document --------------------------------------------------------------

    def config(self, document: dict[str, Any], prepare: bool) -> Config | None:
        self.known(document, (), {"server", "upstream"}, "at the top level")
        server = self.table(document, ("server",), SERVER_KEYS)
        listeners = self.listeners(server)
        tls_cert = self.path(server, ("server", "tls_cert"))
        tls_key = self.path(server, ("server", "tls_key"))
        allow = self.value(server, ("server", "allow_plaintext_listen"), _boolean, False)
        idle = self.value(
            server, ("server", "account_idle_timeout"), parse_duration, DEFAULT_ACCOUNT_IDLE_SECONDS
        )
        login_delay = self.value(server, ("server", "login_delay"), parse_duration, 2.0)
        login_delay_max = self.value(server, ("server", "login_delay_max"), parse_duration, 15.0)
        if not 0 <= login_delay <= login_delay_max <= 3600:
            self.problem(
                ("server", "login_delay"),
                "login_delay and login_delay_max: need 0 <= delay <= max <= 1h",
            )
        write_wait = self.value(server, ("server", "write_wait"), parse_duration, 3.0)
        if not 0 <= write_wait <= 600:
            self.problem(("server", "write_wait"), "write_wait: expected 0 to 10m")
        metrics = self.metrics(server)
        server_tls = self.server_tls(server, listeners, tls_cert, tls_key, allow)
        state_dir = self.state_dir(server, prepare)
        upstreams = self.upstreams(document, listeners)
        if state_dir is None or not upstreams or self.problems:
            return None
        return Config(
            tuple(listener for listener, _ in listeners),
            state_dir,
            tuple(upstreams),
            tls_cert,
            tls_key,
            allow_plaintext_listen=allow,
            account_idle_seconds=idle,
            login_delay=login_delay,
            login_delay_max=login_delay_max,
            write_wait=write_wait,
            metrics=metrics[0],
            metrics_allow_remote=metrics[1],
            server_tls=server_tls,
        )

    def metrics(self, server: dict[str, Any]) -> tuple[Listener | None, bool]:
        allow = self.value(server, ("server", "metrics_allow_remote"), _boolean, False)
        if "metrics" not in server:
            return None, allow
        try:
            address = _nonempty_string(server["metrics"])
            return make_metrics_listener(address, "metrics", allow, "metrics_allow_remote"), allow
        except ValueError as exc:
            self.problem(("server", "metrics"), f"metrics: {exc}")
        except ConfigError as exc:
            self.problem(("server", "metrics"), str(exc))
        return None, allow

    def listeners(self, server: dict[str, Any]) -> list[tuple[Listener, KeyPath]]:
        """Every listener with the key path it was written at (for later errors)."""
        if "listen" not in server and "listen_tls" not in server:
            return [(Listener(*parse_listen(DEFAULT_LISTEN)), ("server",))]
        found: list[tuple[Listener, KeyPath]] = []
        seen: dict[str, str] = {}
        for key, implicit_tls in (("listen", False), ("listen_tls", True)):
            for address, path in self.strings_or_one(server, ("server", key)):
                try:
                    listener = make_listener(address, key, implicit_tls)
                except ConfigError as exc:
                    self.problem(path, str(exc))
                    continue
                where = listener.describe()
                if (listener.port != 0 or listener.endpoint) and where in seen:
                    self.problem(path, f"{key}: {listener.describe()} is already in {seen[where]}")
                    continue
                seen[where] = key
                found.append((listener, path))
        return found

    def server_tls(
        self,
        server: dict[str, Any],
        listeners: list[tuple[Listener, KeyPath]],
        cert: Path | None,
        key: Path | None,
        allow: bool,
    ) -> ServerTLS | None:
        if (cert is None) != (key is None):
            given = "tls_cert" if cert is not None else "tls_key"
            self.problem(("server", given), "tls_cert and tls_key go together")
        for listener, path in listeners:
            if listener.implicit_tls and cert is None:
                self.problem(path, "listen_tls needs a certificate: give tls_cert and tls_key")
            try:
                check_plaintext_listener(listener, cert is not None, allow, "tls_cert/tls_key")
            except ConfigError as exc:
                self.problem(path, str(exc))
        if cert is None or key is None or not cert.is_file() or not key.is_file():
            return None
        try:
            return load_server_tls(cert, key)
        except ServerTLSError as exc:
            text = str(exc)
            blamed = "tls_key" if text.startswith("--tls-key") else "tls_cert"
            text = text.replace("--tls-key", "tls_key").replace("--tls-cert", "tls_cert")
            self.problem(("server", blamed), text)
            return None

    def state_dir(self, server: dict[str, Any], prepare: bool) -> Path | None:
        path = self.path(server, ("server", "state_dir"), must_exist=False)
        chosen = path or default_state_dir()
        if prepare:
            try:
                return prepare_state_dir(chosen)
            except ConfigError as exc:
                self.problem(("server", "state_dir"), str(exc))
                return None
        if chosen.exists() and not chosen.is_dir():
            self.problem(("server", "state_dir"), f"state directory {chosen}: not a directory")
        return chosen

    def upstreams(
        self, document: dict[str, Any], listeners: list[tuple[Listener, KeyPath]]
    ) -> list[UpstreamConfig]:
        entries = document.get("upstream")
        if entries is None:
            self.problem((), "no [[upstream]]: give at least one upstream server and its url")
            return []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.problem(("upstream",), "upstream must be tables: write [[upstream]]")
            return []
        addresses = {listener.describe() for listener, _ in listeners}
        result: list[UpstreamConfig] = []
        names: set[str] = set()
        urls: dict[str, str] = {}
        catch_all: str | None = None
        for index, entry in enumerate(entries):
            upstream = self.upstream(entry, ("upstream", index), addresses)
            if upstream is None:
                continue
            where = ("upstream", index)
            if upstream.name in names:
                self.problem((*where, "name"), f"a second upstream named {upstream.name!r}")
            names.add(upstream.name)
            url = upstream.address.url()
            if url in urls:
                self.problem(
                    (*where, "url"),
                    f"upstream {urls[url]!r} already has url {url}: one [[upstream]] per "
                    "server (give that one more logins or listeners)",
                )
            urls.setdefault(url, upstream.name)
            if catch_all is not None:
                self.problem(
                    where,
                    f"upstream {upstream.name!r} is never used: upstream {catch_all!r} above "
                    "takes every login (give it logins or listeners, or move it down)",
                )
            elif not upstream.logins and not upstream.listeners:
                catch_all = upstream.name
            result.append(upstream)
        return result

    def upstream(
        self, entry: dict[str, Any], where: KeyPath, addresses: set[str]
    ) -> UpstreamConfig | None:
        self.known(entry, where, UPSTREAM_KEYS, "in [[upstream]]")
        if "url" not in entry:
            self.problem(where, 'this [[upstream]] has no url (e.g. url = "imaps://host")')
            return None
        url = self.value(entry, (*where, "url"), _string, None)
        if url is None:
            return None
        try:
            address = UpstreamAddress.parse(url)
        except AddressError as exc:
            self.problem((*where, "url"), str(exc))
            return None
        name = self.value(entry, (*where, "name"), _nonempty_string, address.host)
        logins = tuple(self.strings(entry, (*where, "logins")))
        routed: list[str] = []
        for text, path in self.strings_or_one(entry, (*where, "listeners")):
            try:
                described = make_listener(text, "listeners", False).describe()
            except ConfigError as exc:
                self.problem(path, str(exc))
                continue
            if described not in addresses:
                known = ", ".join(sorted(addresses))
                self.problem(path, f"listeners: {text!r} is not a listener here ({known})")
                continue
            routed.append(described)
        ca_file = self.path(entry, (*where, "ca_file"))
        if ca_file is not None and ca_file.is_file():
            try:
                check_ca_file(ca_file)
            except Exception:  # any failure to load it is a refusal
                self.problem((*where, "ca_file"), f"ca_file {ca_file}: not a PEM certificate")
        cache_limit = self.value(entry, (*where, "cache_limit"), _positive_size, None)
        return UpstreamConfig(
            name,
            address,
            ca_file,
            logins,
            tuple(routed),
            self.prefetch(entry, (*where, "prefetch")),
            cache_limit,
            self.freshness(entry, (*where, "freshness")),
            self.value(
                entry,
                (*where, "offline_token_lifetime"),
                _token_lifetime,
                DEFAULT_OFFLINE_TOKEN_LIFETIME,
            ),
            self.value(entry, (*where, "oauth"), _boolean, False),
            self.value(entry, (*where, "encrypt"), _boolean, False),
        )

    def prefetch(self, entry: dict[str, Any], where: KeyPath) -> PrefetchSettings:
        table = self.table(entry, where, PREFETCH_KEYS)
        default = PrefetchSettings()
        folders = (
            tuple(self.strings(table, (*where, "folders")))
            if "folders" in table
            else default.folders
        )
        return PrefetchSettings(
            folders,
            self.value(table, (*where, "max_age_days"), _days, default.max_age_days),
            self.value(table, (*where, "max_body_size"), parse_size, default.max_body_size),
        )

    def freshness(self, entry: dict[str, Any], where: KeyPath) -> Freshness:
        table = self.table(entry, where, FRESHNESS_KEYS)
        default = Freshness()
        return Freshness(
            self.value(table, (*where, "sync_interval"), parse_duration, default.sync_interval),
            self.value(table, (*where, "poll_interval"), _positive_duration, default.poll_interval),
        )

    # typed values ----------------------------------------------------------------

    def known(self, table: dict[str, Any], where: KeyPath, allowed: set[str], place: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(
                    (*where, key),
                    f"unknown key {key!r} {place} (known: {', '.join(sorted(allowed))})",
                )

    def table(self, parent: dict[str, Any], path: KeyPath, allowed: set[str]) -> dict[str, Any]:
        value = parent.get(str(path[-1]), {})
        if not isinstance(value, dict):
            self.problem(path, f"{path[-1]} must be a table")
            return {}
        self.known(value, path, allowed, f"in [{_dotted(path)}]")
        return value

    def value(
        self, table: dict[str, Any], path: KeyPath, convert: Callable[[object], T], default: T
    ) -> T:
        if path[-1] not in table:
            return default
        try:
            return convert(table[path[-1]])
        except ValueError as exc:
            self.problem(path, f"{path[-1]}: {exc}")
            return default

    def path(self, table: dict[str, Any], path: KeyPath, must_exist: bool = True) -> Path | None:
        text = self.value(table, path, _nonempty_string, None)
        if text is None:
            return None
        resolved = self.base / Path(text).expanduser()
        if must_exist and not resolved.is_file():
            self.problem(path, f"{path[-1]} {resolved}: no such file")
        return resolved

    def strings(self, table: dict[str, Any], path: KeyPath) -> list[str]:
        return [text for text, _ in self.strings_or_one(table, path, one=False)]

    def strings_or_one(
        self, table: dict[str, Any], path: KeyPath, one: bool = True
    ) -> list[tuple[str, KeyPath]]:
        """A list of non-empty strings (or, where ``one``, a single string), each with
        its own key path."""
        value = table.get(str(path[-1]), [])
        if one and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            kind = "a string or a list of strings" if one else "a list of strings"
            self.problem(path, f"{path[-1]} must be {kind}")
            return []
        found = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problem(
                    (*path, index), f"{path[-1]}: item {index + 1} must be a non-empty string"
                )
            else:
                found.append((item.strip(), (*path, index)))
        return found


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path if isinstance(p, str))


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _nonempty_string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _days(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected a whole number of days, 0 or more")
    return value


def _positive_size(value: object) -> int:
    size = parse_size(value)
    if size == 0:
        raise ValueError("must be more than 0 (leave it out for no limit)")
    return size


def _token_lifetime(value: object) -> float:
    seconds = parse_duration(value)
    if seconds > MAX_OFFLINE_TOKEN_LIFETIME:
        raise ValueError("at most 365 days (a token accepted once must not open the cache forever)")
    return seconds


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError("must be more than 0 seconds")
    return seconds
