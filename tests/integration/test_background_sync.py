"""The background sync shares the account's one upstream connection with clients:
it works in short turns, so a client's command never waits long behind it."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_robustness import _logged_in
from tests.support.corpus import Account, make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

BIG = 3000


@pytest.mark.timeout(120)
def test_client_commands_interleave_with_a_long_background_sync(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    seed_messages(dovecot.mail_root(fresh_user.user), "Big", make_messages(BIG, seed=7))
    open_mailboxes(dovecot, fresh_user.user, ["Big"])
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user, select="INBOX")
    try:
        began = time.monotonic()
        slowest = 0.0
        answered = 0
        while "background sync complete" not in proxy.log_text():
            assert time.monotonic() - began < 90, proxy.log_tail()
            sent = time.monotonic()
            # Each needs the upstream: STATUS resyncs, a body fetch is not cached yet.
            _, tagged = raw.command(b"s1", b"STATUS INBOX (MESSAGES)")
            assert tagged.startswith(b"s1 OK"), tagged
            _, tagged = raw.command(b"f1", f"FETCH {answered % 60 + 1} BODY.PEEK[]".encode())
            assert tagged.startswith(b"f1 OK"), tagged
            slowest = max(slowest, time.monotonic() - sent)
            answered += 1
        whole = time.monotonic() - began
    finally:
        raw.close()
    assert "metadata of 3000 message(s) in 'Big' fetched" in proxy.log_text()
    # The pass took many client round trips' time, and no client command waited for it.
    assert answered >= 5, (answered, whole)
    assert slowest < max(1.2, whole / 4), (slowest, whole)
