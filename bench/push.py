"""Scenario ``push``: how long a new message takes to reach a client idling on the proxy.

Two clients log in to the proxy: the first selects ``Lists/python`` and IDLEs, the
second then selects ``Archive/2024`` and IDLEs. The proxy's single upstream connection
IDLEs on the mailbox selected last (``AccountRuntime.watch`` on SELECT), so
``Archive/2024`` is the *watched* folder and ``Lists/python`` is *not watched*: today
the proxy learns of changes there only by polling. A third client IDLEs directly on
Dovecot across the direct link, for reference.

A message is then delivered straight on Dovecot (APPEND by another client, no link)
to the watched folder, then to the other one; the figure is the time from just before
the APPEND until the idling client reads ``* n EXISTS``. Waits are capped
(``--push-timeout``, 90 s): a client that hears nothing is reported as a timeout, and
the run goes on. The mailbox size plays no part, so this runs once per link profile.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imapclient import IMAPClient

from bench.measure import settle
from bench.report import table
from bench.scenario import Context, Outcome, Scenario, group, log, median, register
from bench.workload import CLIENT_TIMEOUT
from tests.support.corpus import make_messages

WATCHED, OTHER = "Archive/2024", "Lists/python"
PUSH_INBOX = 20
DELIVERY_SEED = 800_000_000


def _idling(host: str, port: int, user: str, password: str, folder: str) -> IMAPClient:
    client = IMAPClient(host, port=port, ssl=False, timeout=CLIENT_TIMEOUT)
    client.login(user, password)
    client.select_folder(folder)
    client.idle()
    return client


def _drain(client: IMAPClient) -> None:
    """Discard what arrived before the delivery, so only news after it counts."""
    client.idle_check(timeout=0)


def _wait_exists(client: IMAPClient, deadline: float) -> float | None:
    """perf_counter() when ``* n EXISTS`` arrived, or None if nothing came by ``deadline``."""
    while (left := deadline - time.perf_counter()) > 0:
        for response in client.idle_check(timeout=min(left, 1.0)):
            if len(response) >= 2 and response[1] == b"EXISTS":
                return time.perf_counter()
    return None


def _deliver(
    ctx: Context, appender: IMAPClient, folder: str, waiting: dict[str, IMAPClient], seed: int
) -> dict[str, float | None]:
    """APPEND one message to ``folder``; seconds until each waiting client saw EXISTS."""
    for client in waiting.values():
        _drain(client)
    message = make_messages(1, seed=seed)[0]
    with ThreadPoolExecutor(len(waiting)) as pool:
        start = time.perf_counter()
        deadline = start + ctx.args.push_timeout
        futures = {name: pool.submit(_wait_exists, c, deadline) for name, c in waiting.items()}
        appender.append(folder, message.raw)
        seen = {name: future.result() for name, future in futures.items()}
    return {name: None if t is None else t - start for name, t in seen.items()}


def run(ctx: Context) -> None:
    user = ctx.bench.user("push", PUSH_INBOX)
    dovecot = ctx.bench.dovecot
    for repeat in range(ctx.args.repeat):
        proxy = ctx.start_proxy(f"push-{ctx.rtt_ms:g}-{repeat}")
        clients: list[IMAPClient] = []
        try:
            host, port = proxy.process.host, proxy.process.port
            other = _idling(host, port, user.name, user.password, OTHER)
            clients.append(other)
            watched = _idling(host, port, user.name, user.password, WATCHED)
            clients.append(watched)
            direct = _idling(ctx.direct.host, ctx.direct.port, user.name, user.password, WATCHED)
            clients.append(direct)
            appender = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=60)
            clients.append(appender)
            appender.login(user.name, user.password)
            settle(ctx.upstream)  # the proxy's own sync and upstream IDLE are in place
            seed = DELIVERY_SEED + 2 * len(ctx.bench.outcome.records.get("push", []))
            first = _deliver(ctx, appender, WATCHED, {"direct": direct, "watched": watched}, seed)
            second = _deliver(ctx, appender, OTHER, {"other": other}, seed + 1)
            ctx.record(
                "push",
                timeout_s=ctx.args.push_timeout,
                direct_s=first["direct"],
                watched_s=first["watched"],
                not_watched_s=second["other"],
            )
            log(f"{ctx.label} push: direct {first['direct']}, watched {first['watched']}, "
                f"not watched {second['other']}")  # fmt: skip
        finally:
            for client in clients:
                _leave(client)
            ctx.stop_proxy(proxy)


def _leave(client: IMAPClient) -> None:
    """End IDLE and log out as a well-behaved client does; drop the connection otherwise."""
    try:
        if client._idle_tag is not None:
            client.idle_done()
        client.logout()
    except (OSError, IMAPClient.Error, IMAPClient.AbortError):
        client.shutdown()


def _latency(values: list[Any], cap: float) -> str:
    """Median latency; a timeout counts as slower than any figure (and is said so)."""
    timeouts = sum(v is None for v in values)
    if timeouts * 2 >= len(values) and timeouts:
        return f"timeout (>{cap:g} s)" + (f", {timeouts}/{len(values)}" if len(values) > 1 else "")
    seen = median(float("inf") if v is None else v for v in values)
    suffix = f" ({timeouts} timeouts)" if timeouts else ""
    return f"{seen:.3f} s{suffix}"


def report(outcome: Outcome) -> str:
    records = outcome.records.get("push", [])
    if not records:
        return ""
    header = [
        "rtt ms", "direct (IDLE on Dovecot)", f"proxy, watched ({WATCHED})",
        f"proxy, not watched ({OTHER})",
    ]  # fmt: skip
    body = []
    for (rtt,), items in sorted(group(records, "rtt_ms").items()):
        cap = items[0]["timeout_s"]
        body.append([
            f"{rtt:g}",
            *(_latency([r[k] for r in items], cap) for k in ("direct_s", "watched_s", "not_watched_s")),
        ])  # fmt: skip
    return (
        "Push latency: APPEND on Dovecot until the idling client sees EXISTS (median):\n\n"
        + table(header, body)
    )


register(Scenario("push", "new mail reaching clients idling on the proxy", run, report, False))
