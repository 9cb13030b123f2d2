"""The command line: ``imapproxy serve --upstream URL --listen HOST:PORT --state-dir DIR``
(and ``--listen-tls HOST:PORT --tls-cert FILE --tls-key FILE`` for implicit TLS), or
``imapproxy serve --config FILE`` for any number of upstreams; ``imapproxy check-config
FILE`` checks such a file without starting anything.

Errors a user can fix (bad URL, unusable state directory, port in use, a certificate
or key that cannot be used) end in one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from imapproxy import __version__
from imapproxy.config import (
    DEFAULT_ACCOUNT_IDLE_SECONDS,
    Config,
    ConfigError,
    default_state_dir,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imapproxy", description="A local caching IMAP proxy.")
    parser.add_argument("--version", action="version", version=f"imapproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy")
    serve.set_defaults(run=_serve)
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="read listeners, upstreams and settings from this TOML file (instead of the "
        "flags below, which configure one upstream)",
    )
    serve.add_argument(
        "--upstream",
        default=None,
        help="imaps://host[:993], imap://host[:143] (STARTTLS) or imap+plain://host[:port]",
    )
    serve.add_argument(
        "--listen",
        default=None,
        help="HOST:PORT to accept clients on in clear, with STARTTLS when --tls-cert is given "
        "(default 127.0.0.1:1143, unless only --listen-tls is given)",
    )
    serve.add_argument(
        "--listen-tls",
        default=None,
        metavar="HOST:PORT",
        help="also (or, without --listen, only) accept clients with implicit TLS from the "
        "first byte, the port 993 style; needs --tls-cert and --tls-key",
    )
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the replica lives (default $XDG_STATE_HOME/imapproxy)",
    )
    serve.add_argument(
        "--upstream-ca",
        type=Path,
        default=None,
        help="PEM file of an extra CA to trust for the upstream",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        help="PEM certificate (then any intermediates) offered to clients: on --listen-tls, "
        "and via STARTTLS on --listen",
    )
    serve.add_argument(
        "--tls-key",
        type=Path,
        default=None,
        help="PEM private key for --tls-cert, unencrypted; refused if other users can read it",
    )
    serve.add_argument(
        "--allow-plaintext-listen",
        action="store_true",
        help="listen on a non-loopback address without TLS",
    )
    serve.add_argument(
        "--login-delay",
        type=float,
        default=None,
        metavar="SECONDS",
        help="delay after a failed login, doubling with each further failure from the same "
        "address (default 2, as Dovecot; 0 turns the delay off, for tests only)",
    )
    serve.add_argument(
        "--login-delay-max",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the most a failed login's delay doubles to (default 15, as Dovecot)",
    )
    serve.add_argument(
        "--write-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a change waits for the upstream's answer before the client hears OK "
        "(it is applied and queued either way; default 3)",
    )
    serve.add_argument(
        "--account-idle-timeout",
        default=None,
        metavar="DURATION",
        help="close an account no session has used for this long, e.g. 30m (the default), "
        "90s; 0 keeps accounts open",
    )
    serve.add_argument(
        "--metrics",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off; loopback "
        "only unless --metrics-allow-remote)",
    )
    serve.add_argument(
        "--metrics-allow-remote",
        action="store_true",
        help="let --metrics listen on an address beyond loopback",
    )
    serve.add_argument(
        "--oauth",
        action="store_true",
        help="the upstream's users log in with OAuth2 (XOAUTH2, OAUTHBEARER): ask it at "
        "startup which mechanisms it offers, to advertise them before anyone logged in",
    )
    serve.add_argument(
        "--cache-limit",
        default=None,
        metavar="SIZE",
        help="most bytes of message bodies kept per account, e.g. 2G (default: no limit); "
        "the least recently read go first, metadata and unsent changes always stay",
    )
    serve.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt each account's replica at rest with a key only its password (or "
        "token, or local password) opens; see README.md, Encryption at rest",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = commands.add_parser(
        "check-config", help="check a configuration file: every error with its line"
    )
    check.set_defaults(run=_check_config)
    check.add_argument("file", type=Path, metavar="FILE")
    _add_status_command(commands)
    _add_prefetch_command(commands)
    _add_passwd_command(commands)
    _add_unlock_command(commands)
    _add_compact_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


#: Flags that --config replaces (the file says all of it).
_CONFIG_FLAGS = (
    "upstream",
    "listen",
    "listen_tls",
    "state_dir",
    "upstream_ca",
    "tls_cert",
    "tls_key",
    "allow_plaintext_listen",
    "account_idle_timeout",
    "login_delay",
    "login_delay_max",
    "write_wait",
    "metrics",
    "metrics_allow_remote",
    "oauth",
    "cache_limit",
    "encrypt",
)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _config(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"imapproxy: error: {line}", file=sys.stderr)
        return 2
    return _run(config)


def _config(args: argparse.Namespace) -> Config:
    if args.config is not None:
        mixed = [
            f"--{f.replace('_', '-')}"
            for f in _CONFIG_FLAGS
            if getattr(args, f) not in (None, False)
        ]
        if mixed:
            raise ConfigError(f"--config and {', '.join(mixed)}: put those settings in the file")
        from imapproxy.config_file import load

        return load(args.config)
    if args.upstream is None:
        raise ConfigError("give --upstream URL (one upstream) or --config FILE")
    idle = DEFAULT_ACCOUNT_IDLE_SECONDS
    if args.account_idle_timeout is not None:
        from imapproxy.config_file import parse_duration

        try:
            idle = parse_duration(args.account_idle_timeout)
        except ValueError as exc:
            raise ConfigError(f"--account-idle-timeout: {exc}") from None
    cache_limit = None
    if args.cache_limit is not None:
        from imapproxy.config_file import parse_size

        try:
            cache_limit = parse_size(args.cache_limit)
        except ValueError as exc:
            raise ConfigError(f"--cache-limit: {exc}") from None
        if cache_limit == 0:
            raise ConfigError("--cache-limit: must be more than 0 (leave it out for no limit)")
    return Config.build(
        upstream=args.upstream,
        listen=args.listen,
        state_dir=args.state_dir or default_state_dir(),
        upstream_ca=args.upstream_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        allow_plaintext_listen=args.allow_plaintext_listen,
        listen_tls=args.listen_tls,
        account_idle_seconds=idle,
        login_delay=2.0 if args.login_delay is None else args.login_delay,
        login_delay_max=15.0 if args.login_delay_max is None else args.login_delay_max,
        write_wait=3.0 if args.write_wait is None else args.write_wait,
        metrics=args.metrics,
        metrics_allow_remote=args.metrics_allow_remote,
        oauth=args.oauth,
        cache_limit=cache_limit,
        encrypt=args.encrypt,
    )


def _check_config(args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary, or 1 with one ``FILE:LINE: problem`` per line."""
    from imapproxy.config_file import load, summary

    try:
        config = load(args.file, prepare=False)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary(config))
    return 0


def _run(config: Config) -> int:
    from twisted.internet import defer
    from twisted.internet import reactor as global_reactor

    from imapproxy.service import ProxyService

    reactor: Any = global_reactor
    service = ProxyService(reactor, config)
    exit_code = 0

    def started_failed(failure: object) -> None:
        nonlocal exit_code
        exit_code = 1
        value = getattr(failure, "value", failure)
        print(f"imapproxy: error: {_describe(value)}", file=sys.stderr)
        reactor.stop()

    def start() -> None:
        defer.ensureDeferred(service.start()).addErrback(started_failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.ensureDeferred(service.stop())
    )
    reactor.run()
    return exit_code


def _add_status_command(commands: Any) -> None:
    status = commands.add_parser("status", help="show each account's link, queue and cache")
    status.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the proxy's state directory (default $XDG_STATE_HOME/imapproxy)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    from imapproxy import status_report

    try:
        accounts = status_report.collect(args.state_dir or default_state_dir())
    except status_report.StatusError as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(status_report.as_json(accounts))
    else:
        sys.stdout.write(status_report.as_text(accounts))
    return 0


def _add_prefetch_command(commands: Any) -> None:
    prefetch = commands.add_parser(
        "prefetch",
        help="make recent mail readable offline now (the password is read from a prompt or stdin)",
    )
    prefetch.add_argument("--upstream", required=True, help="the upstream URL the proxy uses")
    prefetch.add_argument("--user", required=True, help="the account's username")
    prefetch.add_argument("--state-dir", type=Path, default=None, help="the proxy's state dir")
    prefetch.add_argument("--upstream-ca", type=Path, default=None, help="extra CA (PEM)")
    prefetch.add_argument(
        "--folders", default=None, help="comma separated (default INBOX,Sent,Drafts)"
    )
    prefetch.add_argument("--days", type=int, default=None, help="newest N days (default 90)")
    prefetch.add_argument("--max-size", default=None, help="largest body, e.g. 25M (default)")
    prefetch.set_defaults(run=_prefetch)


def _prefetch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from imapproxy import prefetch_command
    from imapproxy.sync.prefetch import PolicyError, PrefetchPolicy, parse_size
    from imapproxy.upstream.address import AddressError, UpstreamAddress

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        address = UpstreamAddress.parse(args.upstream)
        policy = PrefetchPolicy.from_environment()
        if args.folders is not None:
            folders = tuple(f.strip() for f in args.folders.split(",") if f.strip())
            policy = replace(policy, folders=folders)
        if args.days is not None:
            policy = replace(policy, days=args.days)
        if args.max_size is not None:
            policy = replace(policy, max_size=parse_size(args.max_size))
        state_dir = args.state_dir or default_state_dir()
        if not (state_dir / "replica").is_dir():
            raise prefetch_command.PrefetchError(f"no replica in {state_dir}")
        password = prefetch_command.read_password(args.user)
    except (AddressError, PolicyError, prefetch_command.PrefetchError) as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 2
    return _run_once(
        lambda reactor: prefetch_command.run(
            reactor, state_dir, address, args.user, password, policy, args.upstream_ca
        )
    )


def _add_passwd_command(commands: Any) -> None:
    passwd = commands.add_parser(
        "passwd",
        help="set a local password for logging in offline (for OAuth2 accounts above all)",
    )
    passwd.add_argument("user", help="the login name, as the mail client sends it")
    where = passwd.add_mutually_exclusive_group()
    where.add_argument("--upstream", default=None, help="the upstream URL the proxy uses")
    where.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="the proxy's configuration"
    )
    passwd.add_argument("--state-dir", type=Path, default=None, help="the proxy's state dir")
    passwd.add_argument(
        "--stdin", action="store_true", help="read the password from the first line of stdin"
    )
    passwd.add_argument("--remove", action="store_true", help="remove the local password")
    passwd.set_defaults(run=_passwd)


def _passwd(args: argparse.Namespace) -> int:
    from imapproxy import passwd_command
    from imapproxy.upstream.address import AddressError, UpstreamAddress

    try:
        state_dir = args.state_dir
        if args.config is not None:
            from imapproxy.config_file import load

            config = load(args.config, prepare=False)
            url = passwd_command.upstream_for(config, args.user)
            state_dir = state_dir or config.state_dir
        elif args.upstream is not None:
            url = UpstreamAddress.parse(args.upstream).url()
        else:
            raise passwd_command.PasswdError("give --upstream URL or --config FILE")
        state_dir = state_dir or default_state_dir()
        password = None if args.remove else passwd_command.read_new_password(args.user, args.stdin)
        passwd_command.set_password(state_dir, url, args.user, password)
    except (passwd_command.PasswdError, AddressError, ConfigError) as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 2
    done = "removed" if args.remove else "set"
    if not args.remove and passwd_command.is_encrypted(state_dir, url, args.user):
        print(
            f"local password of {args.user} at {url} set; the cache is encrypted: the "
            "password unlocks it (imapproxy unlock) once the account has logged in through "
            "the proxy again"
        )
        return 0
    print(f"local password of {args.user} at {url} {done} (it counts only while offline)")
    return 0


def _add_unlock_command(commands: Any) -> None:
    unlock = commands.add_parser(
        "unlock",
        help="give a running proxy the key of an encrypted account back (after a restart, "
        "when the password changed elsewhere or an OAuth client has a new token)",
    )
    unlock.add_argument("user", help="the login name, as the mail client sends it")
    where = unlock.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="the proxy's configuration"
    )
    where.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="the proxy's listener (default 127.0.0.1:1143)",
    )
    unlock.add_argument(
        "--tls", action="store_true", help="the --listen address speaks TLS from the first byte"
    )
    unlock.add_argument(
        "--ca", type=Path, default=None, metavar="FILE", help="trust this certificate (PEM)"
    )
    unlock.add_argument(
        "--password-fd",
        type=int,
        default=None,
        metavar="N",
        help="read the password from the first line of this file descriptor (scripts); "
        "otherwise a prompt, or stdin when it is not a terminal",
    )
    unlock.set_defaults(run=_unlock)


def _unlock(args: argparse.Namespace) -> int:
    from imapproxy import unlock_command

    try:
        if args.config is not None:
            from imapproxy.config_file import load

            target = unlock_command.target_of(load(args.config, prepare=False))
        else:
            target = unlock_command.target_of_listen(args.listen, args.tls, args.ca)
        password = unlock_command.read_password(args.user, args.password_fd)
        unlock_command.unlock(target, args.user, password)
    except (unlock_command.UnlockError, ConfigError) as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 1
    print(f"unlocked: the proxy holds the key of {args.user} until it stops; log in as usual")
    return 0


def _add_compact_command(commands: Any) -> None:
    compact = commands.add_parser(
        "compact",
        help="give back the disk space the replica keeps after freeing content "
        "(stop the proxy first)",
    )
    compact.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the proxy's state directory (default $XDG_STATE_HOME/imapproxy)",
    )
    compact.set_defaults(run=_compact)


def _compact(args: argparse.Namespace) -> int:
    """Compact the replica; refuses (exit 1, one line) while a proxy has it open."""
    from imapproxy.status_report import size
    from imapproxy.store.compact import StoreBusy, compact

    path = (args.state_dir or default_state_dir()) / "replica"
    try:
        done = compact(path)
    except (StoreBusy, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 1
    print(f"compacted {path}: {size(done.before)} -> {size(done.after)}")
    return 0


def _run_once(work: Any) -> int:
    """Run one coroutine on the reactor; a PrefetchError-like failure is one line."""
    from twisted.internet import defer
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    exit_code = 0

    def failed(failure: Any) -> None:
        nonlocal exit_code
        exit_code = 1
        print(f"imapproxy: error: {_describe(failure.value)}", file=sys.stderr)

    def start() -> None:
        deferred = defer.ensureDeferred(work(reactor))
        deferred.addErrback(failed)
        deferred.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    return exit_code


def _describe(error: object) -> str:
    from twisted.internet.error import CannotListenError

    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        return f"cannot listen on {error.interface or '*'}:{error.port}: {reason}"
    return str(error) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
