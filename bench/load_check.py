"""The load test's "nothing lost": Dovecot's final state against what the sessions did.

Read straight from Dovecot (not through the proxy) once the proxy's outbox is empty.
Per account, the sessions' expectations (``bench.load_session.expectations``) are merged
(they are disjoint by construction) and checked:

- every owned message that should still be in the INBOX is there exactly once, with the
  ``\\Seen`` and ``\\Flagged`` its session left; one that was moved or expunged is gone;
- every message moved or copied to ``Archive/2024`` is there exactly once, with the
  flags it had when it was moved or copied;
- every draft APPENDed is in Drafts exactly once;
- no Message-ID is in the INBOX twice (nothing was duplicated by a replay).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from imapclient import IMAPClient

from bench.load_session import (
    ARCHIVE,
    DRAFTS,
    MESSAGE_ID,
    MSGID_ITEM,
    MSGID_KEY,
    TRACKED,
    fetch_all,
)


def _folder(client: IMAPClient, folder: str) -> dict[str, list[set[str]]]:
    """Message-ID -> the tracked flags of each message carrying it (a list: duplicates)."""
    client.select_folder(folder, readonly=True)
    out: dict[str, list[set[str]]] = {}
    for item in fetch_all(client, ["FLAGS", MSGID_ITEM]).values():
        match = MESSAGE_ID.search(item.get(MSGID_KEY) or b"")
        if match is None:
            continue
        flags = {f.decode() for f in item[b"FLAGS"] if f in TRACKED}
        if b"\\Deleted" in item[b"FLAGS"]:
            flags.add("\\Deleted")
        out.setdefault(match.group(1).decode(), []).append(flags)
    return out


def check_account(
    host: str, port: int, user: str, password: str, expects: list[dict[str, Any]]
) -> tuple[list[str], Counter[str]]:
    """(what is wrong, what was checked) for one account."""
    wrong: list[str] = []
    checked: Counter[str] = Counter()
    with IMAPClient(host, port=port, ssl=False, timeout=120) as client:
        client.login(user, password)
        inbox = _folder(client, "INBOX")
        archive = _folder(client, ARCHIVE)
        drafts = _folder(client, DRAFTS)
        client.logout()
    twice = [mid for mid, copies in inbox.items() if len(copies) > 1]
    if twice:
        wrong.append(f"{user}: {len(twice)} Message-ID(s) more than once in INBOX, e.g. {twice[0]}")
    for expect in expects:
        for mid, state in expect["owned"].items():
            found = inbox.get(mid, [])
            if state["inbox"] is None:
                checked["gone from INBOX"] += 1
                if found:
                    done = "moved" if state["archive"] is not None else "expunged"
                    wrong.append(f"{user}: {mid} {done}, still in INBOX with {sorted(found[0])}")
            else:
                checked["flags in INBOX"] += 1
                if len(found) != 1:
                    wrong.append(f"{user}: {mid} is {len(found)} times in INBOX, expected once")
                elif found[0] != set(state["inbox"]):
                    wrong.append(f"{user}: {mid} has {sorted(found[0])} in INBOX, "
                                 f"expected {state['inbox']}")  # fmt: skip
            if state["archive"] is not None:
                checked["moved or copied"] += 1
                copies = archive.get(mid, [])
                if len(copies) != 1:
                    wrong.append(
                        f"{user}: {mid} is {len(copies)} times in {ARCHIVE}, expected once"
                    )
                elif copies[0] != set(state["archive"]):
                    wrong.append(f"{user}: {mid} has {sorted(copies[0])} in {ARCHIVE}, "
                                 f"expected {state['archive']}")  # fmt: skip
        for mid in expect["drafts"]:
            checked["appended"] += 1
            count = len(drafts.get(mid, []))
            if count != 1:
                wrong.append(f"{user}: draft {mid} is {count} times in {DRAFTS}, expected once")
        for mid in expect["uncertain_drafts"]:
            if len(drafts.get(mid, [])) > 1:
                wrong.append(f"{user}: draft {mid} (APPEND failed) is in {DRAFTS} more than once")
    return wrong, checked
