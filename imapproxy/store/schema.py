"""The on-disk schema, and the version check that guards it.

One LMDB environment (``STATE_DIR/replica``) holds every account; each account's
records are one key range, prefixed by its 4-byte id. All integers in keys are
big-endian, so LMDB's byte order is numeric order. Records are compact JSON.

=============  =========================================  ===================================
database       key                                        value
=============  =========================================  ===================================
meta           ``schema_version``                         ``b"1"``
               ``uidvalidity_clock``                      last local UIDVALIDITY handed out
               ``counter:<name>``                         next value of a counter (u64)
               ``status:`` account(4)                     what `imapproxy status` shows (link
                                                          state, last sync, byte counters, pid)
               ``status:service``                         {pid, started} of the serving proxy
               ``mechanisms:`` sha256(upstream)           OAuth mechanisms it last offered
accounts       sha256(upstream NUL username)              {id, upstream, username, verifier}
                                                          (verifier: scrypt params, salt, hash;
                                                          tokens, local_password: see
                                                          offline_logins; encryption: key
                                                          wrappings and key pair of an
                                                          encrypted account, account_keys)
mailboxes      account(4) mailbox(4)                      name, delimiter, attributes,
                                                          subscribed, local uidvalidity/uidnext/
                                                          highestmodseq, upstream uidvalidity/
                                                          uidnext/highestmodseq/last uid,
                                                          first_recent_uid (\\Recent not yet
                                                          claimed from this UID on),
                                                          new_keywords (upstream PERMANENTFLAGS
                                                          has ``\\*``)
messages       account(4) mailbox(4) uid(4)               [upstream uid, flags, internaldate,
                                                          size, modseq, blob]
upstream_uids  account(4) mailbox(4) upstream uid(4)      local uid(4)
cache          account(4) blob(8) kind(1) [sect.hash(8)]  ENVELOPE / BODYSTRUCTURE (serialized
                                                          IMAP), header, full message, sections
changes        account(4) mailbox(4) modseq(8)            {uid, what} — the per-mailbox change
                                                          log for CONDSTORE/QRESYNC: every
                                                          expunge (what "expunge", the local
                                                          UID, at the modseq the expunge got)
                                                          since the mailbox was created, which
                                                          answers VANISHED (EARLIER); flag
                                                          changes too ("flags"), though a
                                                          message's own modseq answers those
outbox         account(4) seq(8)                          {op, args, created, [attempts],
                                                          [state, reason, resolved]} — queued
                                                          changes (args: the operation's typed
                                                          record as JSON, outbox/operations.py);
                                                          refused ones stay, state refused/failed
links          account(4) mailbox(4) local uid(4)         [upstream uidvalidity, upstream uid] of
                                                          a message created locally, once known
meta           ``outbox_paused:`` account(4)              {reason, since}: replay waits for a
                                                          new login (credentials refused)
blob_refs      account(4) blob(8) mailbox(4) uid(4)       1 if the message has an upstream
                                                          UID, else 0 (messages.py)
usage          account(4) blob(8)                         [body bytes, stamp] (usage.py)
lru            account(4) stamp(8) blob(8)                empty: eviction order (usage.py)
meta           ``cache_bytes:`` / ``cache_limit:``        body bytes cached / the limit
               account(4)                                 (usage.py)
meta           ``subscribed_only:`` account(4)            [names]: subscriptions with no
                                                          mailbox (subscriptions.py)
meta           ``outbox_refused:`` account(4)             [seq]: refused outbox entries, in
                                                          clear for `imapproxy status`
twins          account(4) size(8) hdr hash(8) blob(8)     empty: cached full bodies by length
                                                          and header hash (twins.py)
twin_of        account(4) blob(8)                         size(8) hash(8): the key above
held           account(4) blob(8)                         u64 ms: a body kept a while after
                                                          the upstream expunged its message
                                                          (held.py)
gm_msgid       account(4) X-GM-MSGID(8)                   blob(8): the blob of the message
                                                          Gmail calls so (gmail_ids.py)
gm_of          account(4) blob(8)                         X-GM-MSGID(8): the key above
=============  =========================================  ===================================

For an encrypted account (keyring.py) the values of mailboxes, messages, cache,
changes, outbox, links and its ``subscribed_only:`` record are sealed (version, nonce,
AES-GCM ciphertext; the database and key as associated data), and the header hash in
twins/twin_of is an HMAC under its key; everything else above stays as shown. This
needed no version change: an account is encrypted when its record says so, and a store
without encrypted accounts is byte for byte what it was.

Version 2 added blob_refs, usage and lru; a version 1 store is brought up to date when
it is opened (``migrate_1_to_2``, one transaction: all or nothing). twins, twin_of,
held, gm_msgid and gm_of came later without a version change: they are hints an older
store simply lacks (a missed twin, a message of a Gmail label downloaded once more,
never a wrong answer), and an older imapproxy ignores them.
"""

from __future__ import annotations

import logging

from imapproxy.store import messages, usage
from imapproxy.store._tx import Tx
from imapproxy.store.cache import BODY_KINDS

log = logging.getLogger(__name__)

SCHEMA_VERSION = b"2"


class SchemaError(Exception):
    """The state directory was written by an incompatible version of imapproxy."""


def check_or_initialize(tx: Tx) -> None:
    found = tx.get(b"meta", b"schema_version")
    if found is None:
        tx.put(b"meta", b"schema_version", SCHEMA_VERSION)
    elif found == b"1":
        migrate_1_to_2(tx)
    elif found != SCHEMA_VERSION:
        raise SchemaError(
            f"state directory has schema version {found.decode(errors='replace')}, "
            f"this imapproxy reads version {SCHEMA_VERSION.decode()}"
        )


def migrate_1_to_2(tx: Tx) -> None:
    """Index which messages use each blob and count the cached bodies (their last reads
    are unknown: they go first when a limit asks for room)."""
    indexed = messages.index_blob_refs(tx)
    counted = usage.rebuild(tx, frozenset(k.value for k in BODY_KINDS))
    tx.put(b"meta", b"schema_version", b"2")
    log.info(
        "replica brought to schema 2: %d messages indexed, %d bytes of bodies counted",
        indexed,
        counted,
    )
