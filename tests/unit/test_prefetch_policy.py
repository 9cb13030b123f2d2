"""The prefetch policy: which folders, how old, how large; and the progress display."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from imapproxy.prefetch_command import Progress
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.prefetch import PolicyError, PrefetchPolicy, first_batch, parse_size
from imapproxy.types import UID, AccountId, BlobId, MailboxId, UpstreamUID

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _message(size: int, date: str, upstream: int | None = 1) -> Message:
    up = None if upstream is None else UpstreamUID(upstream)
    return Message(UID(1), up, (), date, size, 1, BlobId(1))


def _mailbox(name: str, *attributes: str, selectable: bool = True) -> Mailbox:
    return Mailbox(AccountId(1), MailboxId(1), name, attributes=attributes, selectable=selectable)


def test_defaults_cover_inbox_sent_drafts_90_days_25_mb() -> None:
    policy = PrefetchPolicy.from_environment({})
    assert policy.covers_folder(_mailbox("INBOX"))
    assert policy.covers_folder(_mailbox("Sent"))
    assert policy.covers_folder(_mailbox("Gesendet", "\\Sent"))
    assert not policy.covers_folder(_mailbox("Archive"))
    assert not policy.covers_folder(_mailbox("Drafts", selectable=False))
    assert policy.covers(_message(1000, "20-May-2026 10:00:00 +0000"), NOW)
    assert not policy.covers(_message(1000, "20-Jan-2026 10:00:00 +0000"), NOW)
    assert not policy.covers(_message(26 * 2**20, "20-May-2026 10:00:00 +0000"), NOW)
    # Not yet upstream (appended offline): nothing to fetch.
    assert not policy.covers(_message(10, "20-May-2026 10:00:00 +0000", upstream=None), NOW)


def test_environment_settings() -> None:
    policy = PrefetchPolicy.from_environment(
        {
            "IMAPPROXY_PREFETCH_FOLDERS": "Work, INBOX",
            "IMAPPROXY_PREFETCH_DAYS": "7",
            "IMAPPROXY_PREFETCH_MAX_SIZE": "1M",
        }
    )
    assert policy == PrefetchPolicy(("Work", "INBOX"), 7, 2**20)
    assert not PrefetchPolicy.from_environment({"IMAPPROXY_PREFETCH_FOLDERS": ""}).enabled
    with pytest.raises(PolicyError):
        PrefetchPolicy.from_environment({"IMAPPROXY_PREFETCH_MAX_SIZE": "lots"})
    assert parse_size("25M") == parse_size("25mb") == 25 * 2**20
    assert parse_size("100") == 100


def test_first_batch_fits_the_budget_but_takes_at_least_one() -> None:
    wanted = [_message(size, "01-Jan-2026 00:00:00 +0000") for size in (400, 400, 400)]
    assert len(first_batch(wanted, 1000)) == 2
    assert len(first_batch(wanted, 10)) == 1
    assert len(first_batch(wanted, 10**6)) == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    terminal = _Terminal()
    bar = Progress(4, 4000, terminal)
    bar.advance(2, 2000, 0.1)
    bar.advance(2, 2000, 0.1)
    bar.finish()
    shown = terminal.getvalue()
    assert shown.startswith("\r[") and "100%" in shown and "4/4 messages" in shown
    assert shown.endswith("\n")

    log = io.StringIO()
    lines = Progress(4, 4000, log)
    lines.advance(1, 1000, 0.1)
    assert log.getvalue() == "prefetch: 1/4 messages, 1000 B of about 3.9 KiB\n"
