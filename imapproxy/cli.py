"""The command line: ``imapproxy serve --upstream URL --listen HOST:PORT --state-dir DIR``.

Errors a user can fix (bad URL, unusable state directory, port in use) end in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from imapproxy import __version__
from imapproxy.config import Config, ConfigError, default_state_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imapproxy", description="A local caching IMAP proxy.")
    parser.add_argument("--version", action="version", version=f"imapproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument(
        "--upstream",
        required=True,
        help="imaps://host[:993], imap://host[:143] (STARTTLS) or imap+plain://host[:port]",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:1143",
        help="HOST:PORT to accept clients on (default 127.0.0.1:1143)",
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
        help="PEM certificate offered to clients via STARTTLS",
    )
    serve.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    serve.add_argument(
        "--allow-plaintext-listen",
        action="store_true",
        help="listen on a non-loopback address without TLS",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_status_command(commands)
    _add_prefetch_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        return int(args.run(args))
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = Config.build(
            upstream=args.upstream,
            listen=args.listen,
            state_dir=args.state_dir or default_state_dir(),
            upstream_ca=args.upstream_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            allow_plaintext_listen=args.allow_plaintext_listen,
        )
    except ConfigError as exc:
        print(f"imapproxy: error: {exc}", file=sys.stderr)
        return 2
    return _run(config)


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
