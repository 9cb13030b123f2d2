"""Scenario ``resync``: what a session costs the upstream after changes made elsewhere.

Per repeat, on a new proxy: a first session through the proxy fills the replica; then,
straight on Dovecot (another client, not through any link), 20 new messages arrive, 50
messages are flagged and 10 expunged; then the workload runs once directly and once
through the proxy (message list without bodies, so a body that happens to be new does
not blur the figure), and their answers must be equal. Reported: the proxy session's
time against the direct one, and every byte between the proxy and Dovecot from the
first change to the end of the session (background sync included), with the number of
command lines the proxy sent meanwhile (each a round trip unless pipelined). A proxy
that syncs only what changed keeps all three flat as the mailbox grows.
"""

from __future__ import annotations

import imaplib

from imapclient import IMAPClient

from bench.compare import compare
from bench.measure import settle
from bench.report import human_bytes, ratio, seconds, table
from bench.scenario import Context, Outcome, Scenario, group, log, median, register
from bench.sessions import direct_session, proxy_session
from tests.support.corpus import make_messages

NEW, FLAGGED, EXPUNGED = 20, 50, 10
#: Generator seeds of the new messages, apart from any seed a mailbox size could use.
NEW_SEED_BASE = 900_000_000


def _spread(items: list[int], count: int) -> list[int]:
    """``count`` items taken evenly from ``items`` (all of them if there are fewer)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def apply_changes(ctx: Context, user: str, password: str, seed: int) -> dict[str, int]:
    """20 new, 50 flagged, 10 expunged in INBOX, made on Dovecot by another client."""
    dovecot = ctx.bench.dovecot
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=60) as client:
        client.login(user, password)
        client.select_folder("INBOX")
        gone = _spread(client.search(["ALL"]), EXPUNGED)
        client.add_flags(gone, [b"\\Deleted"])
        client.uid_expunge(gone)
        flagged = _spread(client.search(["UNFLAGGED"]), FLAGGED)
        client.add_flags(flagged, [b"\\Flagged"])
        for message in make_messages(NEW, seed=seed):
            client.append("INBOX", message.raw)
        client.logout()
    return {"new": NEW, "flagged": len(flagged), "expunged": len(gone)}


def run(ctx: Context) -> None:
    assert ctx.size is not None
    user = ctx.bench.user("resync", ctx.size)
    for repeat in range(ctx.args.repeat):
        proxy = ctx.start_proxy(f"resync-{ctx.size}-{ctx.rtt_ms:g}-{repeat}")
        try:
            first, _ = proxy_session(ctx, proxy, user.name, user.password, 0)
            ctx.upstream.reset_counters()
            seed = NEW_SEED_BASE + len(ctx.bench.outcome.records.get("resync", []))
            changes = apply_changes(ctx, user.name, user.password, seed)
            direct, direct_answers = direct_session(ctx, user.name, user.password, 0)
            # What the proxy exchanged upstream since the first change: the resync it
            # made on the upstream's news (IDLE, NOTIFY) while the direct session ran.
            # proxy_session starts its own count, so this is added to it.
            down, up, commands = _counts(ctx)
            try:
                proxied, proxy_answers = proxy_session(ctx, proxy, user.name, user.password, 0)
            except (imaplib.IMAP4.error, OSError) as exc:
                ctx.problem(f"resync: session through the proxy failed: {exc!r}")
                continue
            settle(ctx.upstream)
            comparison = compare(direct_answers.unpack(), proxy_answers)
            for text in comparison.problems:
                ctx.problem(f"resync: {text}")
            ctx.record(
                "resync",
                changes=changes,
                first_proxy_s=first.wall_s,
                first_upstream_down=first.bytes_down,
                direct_s=direct.wall_s,
                direct_server_s=direct.server_s,
                direct_down=direct.bytes_down,
                direct_up=direct.bytes_up,
                proxy_s=proxied.wall_s,
                proxy_server_s=proxied.server_s,
                upstream_down=down + ctx.upstream.bytes_down,
                upstream_up=up + ctx.upstream.bytes_up,
                upstream_commands=commands + ctx.upstream.commands_up,
                before_session_down=down,
                before_session_commands=commands,
            )
            log(
                f"{ctx.label} resync: direct {direct.wall_s:.2f}s, proxy {proxied.wall_s:.2f}s,"
                f" upstream {down + ctx.upstream.bytes_down} B down"
                f" / {up + ctx.upstream.bytes_up} B up"
                f" in {commands + ctx.upstream.commands_up} commands"
                f" ({commands} before the proxy session)"
            )
        finally:
            ctx.stop_proxy(proxy)


def _counts(ctx: Context) -> tuple[int, int, int]:
    """Bytes down, bytes up and commands across the proxy's upstream link so far."""
    link = ctx.upstream
    return link.bytes_down, link.bytes_up, link.commands_up


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def report(outcome: Outcome) -> str:
    records = outcome.records.get("resync", [])
    if not records:
        return ""
    header = [
        "N", "rtt ms", "direct s", "proxy s", "ratio", "w/o parse", "direct down/up",
        "proxy upstream down/up", "cmds",
    ]  # fmt: skip
    body = []
    for (size, rtt), items in sorted(group(records, "size", "rtt_ms").items()):
        d = {k: median(r[k] for r in items) for k in items[0] if k != "changes"}
        body.append([
            str(size),
            f"{rtt:g}",
            seconds(d["direct_s"]),
            seconds(d["proxy_s"]),
            ratio(_over(d["proxy_s"], d["direct_s"])),
            ratio(_over(d["proxy_server_s"], d["direct_server_s"])),
            f"{human_bytes(d['direct_down'])} / {human_bytes(d['direct_up'])}",
            f"{human_bytes(d['upstream_down'])} / {human_bytes(d['upstream_up'])}",
            f"{d['upstream_commands']:.0f}" if "upstream_commands" in d else "-",
        ])  # fmt: skip
    return (
        f"Resync after {NEW} new, {FLAGGED} flagged, {EXPUNGED} expunged upstream "
        "(session without bodies; upstream bytes from the first change on; cmds: commands\n"
        "the proxy sent upstream meanwhile, other than NOOP and IDLE; medians):\n\n"
        + table(header, body)
    )


register(Scenario("resync", "a session after changes made upstream", run, report))
