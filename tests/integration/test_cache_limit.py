"""The cache limit against the real Dovecot: reading more than the limit allows keeps the
cached bodies under it (measured in the replica itself), the least recently read stay,
metadata stays, expunged content goes, and `imapproxy compact` keeps what is left."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import lmdb
import pytest

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

COUNT = 24
BODY_LINES = 250  # about 20 KB per message
LIMIT = 200 * 1024  # room for about 9 of them


def _raw(index: int, tag: str) -> bytes:
    line = f"line of message {index:02d} " + "x" * 56 + "\r\n"
    return (
        f"From: sender@example.org\r\nTo: you@example.org\r\nSubject: big {index:02d}\r\n"
        f"Message-ID: <big{index}.{tag}@example.org>\r\n"
        "Content-Type: text/plain\r\n\r\n" + line * BODY_LINES
    ).encode()


def body_bytes(state_dir: Path) -> int:
    """Bytes of cached bodies (full messages and sections) in the replica, counted from
    the cache database itself rather than from the proxy's own accounting."""
    env = lmdb.open(str(state_dir / "replica"), readonly=True, lock=True, max_dbs=32)
    try:
        cache = env.open_db(b"cache", create=False)
        with env.begin(db=cache) as txn:
            return sum(len(v) for k, v in txn.cursor() if k[12:13] in (b"F", b"X"))
    finally:
        env.close()


def cached_bodies(state_dir: Path) -> set[bytes]:
    """Every full message in the replica's cache database."""
    env = lmdb.open(str(state_dir / "replica"), readonly=True, lock=True, max_dbs=32)
    try:
        cache = env.open_db(b"cache", create=False)
        with env.begin(db=cache) as txn:
            return {bytes(v) for k, v in txn.cursor() if k[12:13] == b"F"}
    finally:
        env.close()


def test_reading_more_than_the_limit_keeps_the_cache_under_it(
    dovecot: Dovecot, make_proxy, fresh_user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    raws = [_raw(i, tag) for i in range(COUNT)]
    assert sum(len(r) for r in raws) > 2 * LIMIT
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        for raw in raws:
            direct.append("INBOX", raw)  # received now: the prefetch policy covers them
    monkeypatch.setenv("IMAPPROXY_PREFETCH_FOLDERS", "INBOX")
    proxy: ProxyProcess = make_proxy(extra_args=["--cache-limit", str(LIMIT)])
    state = proxy.state_dir
    with imap(proxy.host, proxy.port, fresh_user) as client:
        proxy.wait_for_log("prefetch: ")
        # Prefetch filled the room below the low water mark and stopped: never over.
        prefetched = body_bytes(state)
        assert 0 < prefetched <= LIMIT, prefetched
        assert "prefetch stopped: the cache limit leaves no room" in proxy.log_text()

        client.select_folder("INBOX")
        everything = client.search("ALL")
        envelopes = client.fetch(everything, ["ENVELOPE"])
        uid_of = {e[b"ENVELOPE"].subject.decode(): uid for uid, e in envelopes.items()}
        uids = [uid_of[f"big {i:02d}"] for i in range(COUNT)]

        most = 0
        for uid, raw in zip(uids, raws, strict=True):
            got = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
            assert got == raw
            # The body is kept, and the cache trimmed, just after the answer went out
            # (the answer does not wait for the disk); the NOOP's answer comes after.
            client.noop()
            most = max(most, body_bytes(state))
        assert most <= LIMIT, most
        after_reads = body_bytes(state)
        assert after_reads > LIMIT // 2, after_reads  # it is a cache, not an empty one
        # The proxy's own accounting (what `imapproxy status` shows) agrees.
        report = subprocess.run(
            [sys.executable, "-m", "imapproxy", "status", "--json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        (account,) = json.loads(report.stdout)["accounts"]
        assert account["cache_body_bytes"] == after_reads
        assert account["cache_limit"] == LIMIT
        print(
            f"\ncache limit {LIMIT} B; read {sum(len(r) for r in raws)} B of bodies; "
            f"cached after prefetch {prefetched} B, at most {most} B after any read, "
            f"{after_reads} B at the end"
        )

        # Offline: the most recently read are there, the first read was evicted, and
        # every message's metadata is there (a header sync works).
        assert proxy.relay is not None
        proxy.relay.cut()
        for uid, raw in zip(uids[-3:], raws[-3:], strict=True):
            assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == raw
        with pytest.raises(client.Error, match="UNAVAILABLE"):
            client.fetch([uids[0]], ["BODY.PEEK[]"])
        offline = client.fetch(everything, ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[HEADER]"])
        assert len(offline) == len(envelopes)
        proxy.relay.resume()

        # Online again (once the link is back): an evicted body is simply fetched again.
        deadline = time.monotonic() + 20
        while True:
            try:
                again = client.fetch([uids[0]], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]
                break
            except client.Error:
                assert time.monotonic() < deadline, "the link never came back"
                time.sleep(0.3)
        assert again == raws[0]
        client.noop()  # kept and trimmed after the answer
        assert body_bytes(state) <= LIMIT

        # Expunged content goes with the message (once the upstream confirmed it).
        before = body_bytes(state)
        last = uids[-1]
        client.delete_messages([last])
        client.expunge()
        deadline = time.monotonic() + 20
        while body_bytes(state) != before - len(raws[-1]):
            assert time.monotonic() < deadline, (body_bytes(state), before, len(raws[-1]))
            time.sleep(0.2)
        # Expunged on the upstream by another client: freed once the proxy heard of it
        # and looked in every folder for where it might have moved (store/held.py); the
        # room it leaves may go to prefetch, so the body itself is looked for.
        assert raws[-3] in cached_bodies(state)
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            (gone,) = direct.search(["SUBJECT", f"big {COUNT - 3:02d}"])
            direct.delete_messages([gone])
            direct.expunge()
        deadline = time.monotonic() + 20
        while raws[-3] in cached_bodies(state):
            assert time.monotonic() < deadline, proxy.log_tail()
            client.noop()
            time.sleep(0.2)

    proxy.stop()
    before = body_bytes(state)
    compacted = subprocess.run(
        [sys.executable, "-m", "imapproxy", "compact", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert compacted.returncode == 0, compacted.stderr
    assert body_bytes(state) == before
    proxy.start()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        assert proxy.relay is not None
        proxy.relay.cut()
        client.select_folder("INBOX", readonly=True)
        assert client.fetch([uids[-2]], ["BODY.PEEK[]"])[uids[-2]][b"BODY[]"] == raws[-2]
