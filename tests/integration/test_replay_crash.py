"""SIGKILL the proxy again and again while it replays a mixed outbox: nothing lost,
nothing duplicated, flags right.

Rounds of offline changes (flags, a move, a copy, a draft, an expunge, folder creation,
rename and subscription) are queued through a proxy whose upstream link is cut. Then,
with the link back, the proxy is started, a client logs in (which starts the replay)
and the proxy is killed after a short random delay — until the queue is empty, and
round after round until at least KILLS kills. The upstream's final state must be
exactly what the user did, each change once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from imapproxy.store import Store, accounts, outbox
from tests.integration.clients import imap
from tests.integration.test_offline_writes import _folders
from tests.integration.test_writes import _by_message_id, _message, _upstream
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

KILLS = 50
MAX_ROUNDS = 40


def _queue_state(state: Path, upstream: str, user: str) -> tuple[int, int, int]:
    """(pending entries, of which attempted, refused or failed) — read while no proxy runs."""
    store = Store(state / "replica")
    try:
        account = store.read(lambda tx: accounts.find_account(tx, upstream, user))
        assert account is not None
        pending = store.read(lambda tx: outbox.pending(tx, account.id))
        refused = store.read(lambda tx: outbox.refused(tx, account.id))
        return len(pending), sum(1 for e in pending if e.attempts), len(refused)
    finally:
        store.close()


@pytest.mark.timeout(240)
def test_sigkill_at_many_points_of_a_replay(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    rng = random.Random(4549)
    state = tmp_path / "state"
    # Each round uses up three INBOX messages (moved, copied, expunged): enough for
    # MAX_ROUNDS, however few kills a round takes (a fast replay needs fewer restarts).
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        for n in range(3 * MAX_ROUNDS + 5 - len(_upstream(dovecot, fresh_user, "INBOX"))):
            direct.append("INBOX", _message(f"crash filler {n}", f"filler-{n}@imapproxy.test"))
    inbox0 = _upstream(dovecot, fresh_user, "INBOX")
    archive0 = _upstream(dovecot, fresh_user, "Archive/2024")
    sent0 = _upstream(dovecot, fresh_user, "Sent")
    order = sorted(inbox0, key=lambda mid: inbox0[mid][0])
    moved: set[bytes] = set()
    copied: set[bytes] = set()
    expunged: set[bytes] = set()
    drafts: set[bytes] = set()
    keywords: dict[bytes, set[bytes]] = {}
    folders: set[str] = set()
    kills = mid_replay = between_mark_and_answer = 0

    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        with ProxyProcess(upstream, state) as proxy, imap(proxy.host, proxy.port, fresh_user) as c:
            for mailbox in ("INBOX", "Archive/2024", "Sent", "Drafts"):
                _by_message_id(c, mailbox)  # online once: the replica knows everything

        for round_ in range(MAX_ROUNDS):
            if kills >= KILLS:
                break
            # -- queue a round of changes offline ---------------------------------------
            relay.cut()
            with (
                ProxyProcess(upstream, state) as proxy,
                imap(proxy.host, proxy.port, fresh_user) as client,
            ):
                uid_of = {mid: uid for mid, (uid, _) in _by_message_id(client, "INBOX").items()}
                free = [m for m in order if m not in moved | copied | expunged]
                move_mid, copy_mid, gone_mid, *flag_mids = free[:5]
                client.select_folder("INBOX")
                keyword = f"$R{round_}".encode()
                client.add_flags([uid_of[m] for m in flag_mids], [keyword])
                for m in flag_mids:
                    keywords.setdefault(m, set()).add(keyword)
                client.move([uid_of[move_mid]], "Archive/2024")
                moved.add(move_mid)
                client.copy([uid_of[copy_mid]], "Sent")
                copied.add(copy_mid)
                client.add_flags([uid_of[gone_mid]], [b"\\Deleted"])
                client.expunge()
                expunged.add(gone_mid)
                draft_id = f"crash-draft-{round_}@imapproxy.test"
                client.append("Drafts", _message(f"draft {round_}", draft_id), flags=[b"\\Draft"])
                drafts.add(draft_id.encode())
                client.create_folder(f"F{round_}")
                if round_ % 2:
                    client.rename_folder(f"F{round_ - 1}", f"G{round_ - 1}")
                    folders.discard(f"F{round_ - 1}")
                    folders.add(f"G{round_ - 1}")
                folders.add(f"F{round_}")
                client.subscribe_folder(f"F{round_}")
            relay.resume()

            # -- replay it, killed at random points, until the queue is empty ------------
            while True:
                pending, _, _ = _queue_state(state, upstream, fresh_user.user)
                if not pending:
                    break
                proxy = ProxyProcess(upstream, state).start()
                try:
                    with imap(proxy.host, proxy.port, fresh_user):
                        time.sleep(rng.uniform(0.0, 0.04))
                        assert proxy.pid is not None
                        os.kill(proxy.pid, signal.SIGKILL)
                except Exception:
                    pass  # the kill may cut the client's LOGOUT
                finally:
                    proxy.stop()
                kills += 1
                after, attempted, refused = _queue_state(state, upstream, fresh_user.user)
                assert refused == 0, proxy.log_tail()
                if after and after < pending:
                    mid_replay += 1
                if attempted:
                    between_mark_and_answer += 1

    print(
        f"\n{kills} kills, {mid_replay} mid-replay, "
        f"{between_mark_and_answer} with an entry marked attempted and not completed"
    )
    assert kills >= KILLS
    assert mid_replay >= 10, (kills, mid_replay)

    # -- the upstream is exactly what the user did ------------------------------------------
    inbox = _upstream(dovecot, fresh_user, "INBOX")
    assert set(inbox) == set(inbox0) - moved - expunged
    for mid, expected in keywords.items():
        if mid in inbox:
            assert expected <= inbox[mid][1], mid
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        for mailbox, expected in (
            ("Archive/2024", set(archive0) | moved),
            ("Sent", set(sent0) | copied),
        ):
            view = _by_message_id(direct, mailbox)
            direct.select_folder(mailbox, readonly=True)
            assert direct.folder_status(mailbox, ["MESSAGES"])[b"MESSAGES"] == len(expected), (
                f"duplicates in {mailbox}"
            )
            assert set(view) == expected, mailbox
        direct.select_folder("Drafts", readonly=True)
        for draft in drafts:
            assert len(direct.search(["HEADER", "Message-ID", draft.decode()])) == 1, draft
        names = _folders(direct)
        assert folders <= names, folders - names
        assert not {f"F{r}" for r in range(MAX_ROUNDS) if f"G{r}" in folders} & names
