"""Scenario ``sessions``: the client workload directly and through the proxy, side by side.

Per repeat, on a new proxy state dir: ``1 cold`` (a new proxy, empty replica), ``2 warm``
(the same process right after) and ``2 restarted`` (stopped and started again on the
same state dir). Each proxy session is paired with a direct session that runs just
before it across a link of the same profile, and their answers must be equal.
The cold rows also give the memory of the first sync (peak RSS above idle).
"""

from __future__ import annotations

import imaplib

from bench import procstats
from bench.compare import compare
from bench.measure import Sample, settle
from bench.report import memory_table, phase_table, summary_table
from bench.scenario import Context, Outcome, RunningProxy, Scenario, log, register
from bench.workload import Answers, PackedAnswers, run_session

COLD, WARM, RESTARTED = "1 cold", "2 warm", "2 restarted"


def direct_session(
    ctx: Context, user_name: str, password: str, bodies: int
) -> tuple[Sample, PackedAnswers]:
    """The workload straight against Dovecot; its answers packed, for the proxy's
    session that runs next to be compared with (PackedAnswers says why)."""
    link = ctx.direct
    link.reset_counters()
    result = run_session(link.host, link.port, user_name, password, bodies)
    settle(link)
    sample = Sample(result.wall, result.server_wall, result.phases, link.bytes_down, link.bytes_up)
    return sample, PackedAnswers.of(result.answers)


def proxy_session(
    ctx: Context, proxy: RunningProxy, user_name: str, password: str, bodies: int
) -> tuple[Sample, Answers]:
    link, pid = ctx.upstream, proxy.pid
    link.reset_counters()
    cpu_before = procstats.cpu_seconds(pid)
    result = run_session(proxy.process.host, proxy.process.port, user_name, password, bodies)
    settle(link)
    sample = Sample(
        result.wall,
        result.server_wall,
        result.phases,
        link.bytes_down,
        link.bytes_up,
        proxy_cpu_s=procstats.cpu_seconds(pid) - cpu_before,
        start_rss_kib=proxy.start_rss_kib,
        peak_rss_kib=procstats.peak_rss_kib(pid),
        state_dir_bytes=procstats.disk_usage_bytes(proxy.process.state_dir),
    )
    return sample, result.answers


def _pair(ctx: Context, proxy: RunningProxy, session: str) -> None:
    """Run the workload directly and through ``proxy``, record both, compare the answers.

    A proxy that refuses or drops the workload is a finding, not a crash of the
    benchmark: it is recorded as a problem (failing the run) and the next session runs.
    """
    assert ctx.size is not None
    user = ctx.bench.user("bench", ctx.size)
    bodies = ctx.args.bodies
    direct, direct_answers = direct_session(ctx, user.name, user.password, bodies)
    try:
        proxied, proxy_answers = proxy_session(ctx, proxy, user.name, user.password, bodies)
    except (imaplib.IMAP4.error, OSError) as exc:
        ctx.problem(f"{session}: session through the proxy failed: {exc!r}")
        return
    outcome = ctx.bench.outcome
    row = outcome.row(ctx.size, ctx.rtt_ms, session)
    row.direct.append(direct)
    row.proxy.append(proxied)
    comparison = compare(direct_answers.unpack(), proxy_answers)
    outcome.problems += [f"{ctx.label} {session}: {p}" for p in comparison.problems]
    outcome.notes.update(comparison.notes)
    log(
        f"{ctx.label} {session}: direct {direct.wall_s:.2f}s, proxy {proxied.wall_s:.2f}s, "
        f"upstream {proxied.bytes_down} B down"
    )


def run(ctx: Context) -> None:
    """Cold and warm session on one proxy process, then optionally warm after a restart."""
    for repeat in range(ctx.args.repeat):
        name = f"sessions-{ctx.size}-{ctx.rtt_ms:g}-{repeat}"
        proxy = ctx.start_proxy(name)
        try:
            _pair(ctx, proxy, COLD)
            _pair(ctx, proxy, WARM)
        finally:
            ctx.stop_proxy(proxy)
        if ctx.args.no_restart:
            continue
        try:
            restarted = ctx.start_proxy(name)
        except RuntimeError as exc:  # a replica the proxy cannot reopen is a finding
            ctx.problem(f"proxy failed to restart: {exc}")
            continue
        try:
            _pair(ctx, restarted, RESTARTED)
        finally:
            ctx.stop_proxy(restarted)


def report(outcome: Outcome) -> str:
    rows = list(outcome.rows.values())
    if not rows:
        return ""
    return "\n\n".join([
        "Workload, direct and through the proxy (medians; ratio = proxy / direct):",
        summary_table(rows),
        "Seconds per phase (median):",
        phase_table(rows),
        "Memory of the first sync (proxy RSS, cold session; median):",
        memory_table([row for row in rows if row.session == COLD]),
    ])  # fmt: skip


register(Scenario("sessions", "the workload directly and through the proxy", run, report))
