"""`imapproxy status`: what each account's proxy is doing, read from the state directory.

Read-only and safe while the proxy runs (LMDB readers never block its writer). The
running proxy keeps a small per-account record (store/status.py: link up or down and
since when, last background sync, bytes served from the replica and fetched); the
outbox and the cache are counted here. The outbox's record shape is another module's
business and changes, so it is read defensively: an entry counts as refused when the
outbox module says so (``refused(tx, account)`` where it exists) or its record carries
a refusal marker, and as queued otherwise.

An encrypted account (store/keyring.py) is reported without its key, which this
command never has: its outbox entries are sealed, so the depth is the number of
entries and the refusals come from the clear list of refused sequence numbers; it
shows "encrypted, locked" and nothing that needs the key (no names, no subjects).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lmdb

from imapproxy.store import outbox as outbox_store
from imapproxy.store import status as status_record
from imapproxy.store import usage
from imapproxy.store._tx import Tx, decode, u32
from imapproxy.types import AccountId

#: Databases the report reads; any of them may be missing from an older state dir.
READ_DATABASES = (b"meta", b"accounts", b"cache", b"outbox", b"mailboxes", b"messages")


class StatusError(Exception):
    """The state directory holds no replica we can read; the message says why."""


def collect(state_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """One dict per account, in account order."""
    path = state_dir / "replica"
    if not (path / "data.mdb").is_file():
        raise StatusError(f"no replica in {state_dir} (has the proxy run with this --state-dir?)")
    try:
        env = lmdb.open(str(path), readonly=True, max_dbs=32, subdir=True, lock=True)
    except lmdb.Error as exc:
        raise StatusError(f"cannot read {path}: {exc}") from None
    try:
        dbs = {}
        for name in READ_DATABASES:
            try:
                dbs[name] = env.open_db(name, create=False)
            except lmdb.NotFoundError:
                continue
        with env.begin(buffers=True) as txn:
            tx = Tx(txn, dbs)
            service = status_record.get_service(tx) if b"meta" in dbs else {"pid": None}
            serving = service["pid"] if _running(service["pid"]) else None
            return [_account(tx, record, serving, now or time.time()) for record in _accounts(tx)]
    finally:
        env.close()


def _accounts(tx: Tx) -> list[dict[str, Any]]:
    if b"accounts" not in tx.dbs:
        return []
    found = [decode(value) for _, value in tx.scan(b"accounts", b"")]
    return sorted(found, key=lambda record: record["id"])


def _account(tx: Tx, account: dict[str, Any], serving: int | None, now: float) -> dict[str, Any]:
    """serving: the pid of the proxy serving this state dir, if one runs."""
    account_id = account["id"]
    record = (
        status_record.get(tx, account_id) if b"meta" in tx.dbs else dict(status_record.DEFAULTS)
    )
    # The link state is current only if the running proxy wrote it (a login since it
    # started); an earlier process's record is history.
    running = serving is not None or _running(record.get("pid"))
    current = _running(record.get("pid")) and serving in (None, record.get("pid"))
    encrypted = account.get("encryption") is not None
    queued, refused = (
        _sealed_outbox_counts(tx, account_id) if encrypted else _outbox_counts(tx, account_id)
    )
    return {
        "user": account.get("username"),
        "upstream": account.get("upstream"),
        "proxy_running": running,
        "pid": serving or (record["pid"] if current else None),
        "logged_in_since_start": current,
        "online": record["online"] if current else None,
        "last_known_online": record["online"],
        "since": record["since"],
        "reason": record["reason"],
        # "encrypted, locked": the replica is sealed, and this command holds no key.
        "encryption": "encrypted, locked" if encrypted else "none",
        "queued_changes": queued,
        "refused_changes": refused,
        # {reason, since} while replay waits for a login the upstream accepts.
        "replay_paused": outbox_store.paused(tx, account_id) if b"meta" in tx.dbs else None,
        "last_sync": record["last_sync"],
        "cache_bytes": _cache_bytes(tx, account_id),
        # Bodies (what the limit bounds) and the limit (None: none), store/usage.py.
        "cache_body_bytes": usage.total(tx, account_id) if b"meta" in tx.dbs else 0,
        "cache_limit": usage.get_limit(tx, account_id) if b"meta" in tx.dbs else None,
        "served_from_cache_bytes": record["served_bytes"],
        "fetched_bytes": record["fetched_bytes"],
        "record_updated": record["updated"],
        "now": now,
    }


def _running(pid: object) -> bool:
    """Whether the process that keeps the record is still an imapproxy."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"imapproxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


_REFUSAL_MARKERS = ("refused", "failed", "rejected")


def _is_refused(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    if any(record.get(marker) for marker in _REFUSAL_MARKERS):
        return True
    state = record.get("state") or record.get("status")
    return isinstance(state, str) and state.lower() in _REFUSAL_MARKERS


def _outbox_counts(tx: Tx, account_id: int) -> tuple[int, int]:
    """(queued, refused) for one account."""
    if b"outbox" not in tx.dbs:
        return 0, 0
    records = []
    for _, value in tx.scan(b"outbox", u32(account_id)):
        try:
            records.append(decode(value))
        except ValueError:
            records.append(None)
    marked = sum(1 for r in records if _is_refused(r))
    refused = marked
    refused_of = getattr(outbox_store, "refused", None)
    if callable(refused_of):
        # The outbox's own word on what was refused, wherever it keeps those.
        try:
            refused = len(refused_of(tx, account_id))
        except Exception:
            refused = marked
    return len(records) - marked, refused


def _sealed_outbox_counts(tx: Tx, account_id: int) -> tuple[int, int]:
    """(queued, refused) of an encrypted account, from what stays clear: the number of
    entries, and the list of refused ones (store/outbox.py, ``refused_seqs``)."""
    if b"outbox" not in tx.dbs:
        return 0, 0
    total = sum(1 for _ in tx.keys(b"outbox", u32(account_id)))
    refused = len(outbox_store.refused_seqs(tx, AccountId(account_id))) if b"meta" in tx.dbs else 0
    return max(0, total - refused), refused


def _cache_bytes(tx: Tx, account_id: int) -> int:
    if b"cache" not in tx.dbs:
        return 0
    total = 0
    cursor = tx.txn.cursor(db=tx.dbs[b"cache"])
    prefix = u32(account_id)
    if not cursor.set_range(prefix):
        return 0
    for key, value in cursor:
        if bytes(key[:4]) != prefix:
            break
        total += len(value)
    return total


# -- formatting ---------------------------------------------------------------------


def as_json(accounts: list[dict[str, Any]]) -> str:
    return json.dumps({"accounts": accounts}, indent=2, sort_keys=True)


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "never"
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    return f"{local} ({_ago(now - stamp)})"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def _link(account: dict[str, Any]) -> str:
    now = account["now"]
    last = {True: "online", False: "offline", None: "unknown"}[account["last_known_online"]]
    if not account["proxy_running"]:
        return f"unknown: the proxy is not running (last known: {last}, {_when(account['since'], now)})"
    if not account["logged_in_since_start"]:
        return (
            "not open: nobody has logged in since the proxy started "
            f"(last known: {last}, {_when(account['since'], now)})"
        )
    if account["online"] is None:
        return "not tried yet"
    if account["online"]:
        return f"online since {_when(account['since'], now)}"
    reason = f": {account['reason']}" if account["reason"] else ""
    return f"offline since {_when(account['since'], now)}{reason}"


def _paused(account: dict[str, Any]) -> list[str]:
    paused = account.get("replay_paused")
    if not paused:
        return []
    return [
        f"  replay paused:    since {_when(paused.get('since'), account['now'])}: "
        f"{paused.get('reason')}; log in with the current password to resume"
    ]


def _encryption(account: dict[str, Any]) -> list[str]:
    if account.get("encryption", "none") == "none":
        return []
    return [f"  cache:            {account['encryption']} (this command reads no content)"]


def _bodies(account: dict[str, Any]) -> str:
    limit = account.get("cache_limit")
    of = f" of the {size(limit)} limit" if limit else ", no limit"
    return f" (bodies {size(account.get('cache_body_bytes') or 0)}{of})"


def as_text(accounts: list[dict[str, Any]]) -> str:
    if not accounts:
        return "no accounts yet: nobody has logged in through this proxy\n"
    lines = []
    for account in accounts:
        now = account["now"]
        pid = f" (pid {account['pid']})" if account["pid"] else ""
        lines += [
            f"{account['user']} at {account['upstream']}",
            f"  proxy:            {'running' if account['proxy_running'] else 'not running'}{pid}",
            f"  upstream link:    {_link(account)}",
            *_encryption(account),
            f"  queued changes:   {account['queued_changes']}",
            f"  refused changes:  {account['refused_changes']}",
            *_paused(account),
            f"  last sync:        {_when(account['last_sync'], now)}",
            f"  cache size:       {size(account['cache_bytes'])}{_bodies(account)}",
            f"  served from cache: {size(account['served_from_cache_bytes'])}; "
            f"fetched from upstream: {size(account['fetched_bytes'])}",
            "",
        ]
    return "\n".join(lines)
