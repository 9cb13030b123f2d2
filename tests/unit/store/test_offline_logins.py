"""Token and local-password verifiers: they match what they were made from, for whom
they were made and until when, and every record made wrong on purpose refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imapproxy.store import Store, accounts, offline_logins, verifier
from imapproxy.store.offline_logins import (
    MAX_TOKENS,
    local_password_matches,
    make_local_password,
    make_token_record,
    token_matches,
    token_records_problem,
    with_token,
)
from imapproxy.store.verifier import ScryptParams

CHEAP = ScryptParams(2**10, 8, 1)
NOW = 1_800_000_000.0
LATER = int(NOW) + 3600


def record(user: bytes = b"alice", token: bytes = b"tok-1", expires: int = LATER) -> dict[str, Any]:
    return make_token_record(user, token, expires, CHEAP)


def test_a_token_matches_for_its_user_until_it_expires() -> None:
    records = [record()]
    assert token_matches(records, b"alice", b"tok-1", NOW)
    assert not token_matches(records, b"alice", b"tok-2", NOW)
    assert not token_matches(records, b"bob", b"tok-1", NOW)  # wrong user in the login
    assert not token_matches(records, b"alice", b"tok-1", LATER)  # expired
    assert not token_matches(records, b"alice", b"tok-1", LATER + 1)


def test_a_later_expiry_written_on_disk_stops_the_record_matching() -> None:
    tampered = record()
    tampered["expires"] = LATER + 86400
    assert token_records_problem([tampered], NOW) is None  # well-formed...
    assert not token_matches([tampered], b"alice", b"tok-1", NOW)  # ...but bound to its expiry


def test_a_record_whose_hash_was_changed_does_not_match() -> None:
    assert not token_matches([_changed(hash="00" * 32)], b"alice", b"tok-1", NOW)


def test_a_record_copied_from_another_account_does_not_match() -> None:
    assert not token_matches([record(user=b"bob")], b"alice", b"tok-1", NOW)


def _changed(**fields: Any) -> dict[str, Any]:
    out = record()
    out.update(fields)
    return out


TAMPERED = {
    "no expiry": {k: v for k, v in record().items() if k != "expires"},
    "expiry a string": _changed(expires=str(LATER)),
    "expiry a bool": _changed(expires=True),
    "expiry a float": _changed(expires=float(LATER)),
    "expiry beyond a year": _changed(expires=int(NOW) + 400 * 86400),
    "absurd scrypt N": _changed(scrypt=[2**40, 8, 1]),
    "short salt": _changed(salt="00" * 4),
    "unknown key": _changed(extra=1),
    "not a mapping": "garbage",
}


@pytest.mark.parametrize("bad", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_malformed_record_refuses_the_whole_list(bad: object) -> None:
    good = record()
    assert not token_matches([good, bad], b"alice", b"tok-1", NOW)
    assert not token_matches([bad, good], b"alice", b"tok-1", NOW)


@pytest.mark.parametrize(
    "records",
    ["x", {"a": 1}, 5, [record()] * (MAX_TOKENS + 1)],
    ids=["string", "mapping", "int", "too many"],
)
def test_a_list_that_is_not_one_refuses(records: object) -> None:
    assert token_records_problem(records, NOW) is not None
    assert not token_matches(records, b"alice", b"tok-1", NOW)


def test_no_list_is_no_match_and_no_problem() -> None:
    assert token_records_problem(None, NOW) is None
    assert not token_matches(None, b"alice", b"tok-1", NOW)


def test_any_exception_while_checking_is_no_match(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> bool:
        raise MemoryError()

    monkeypatch.setattr(verifier.Verifier, "matches", broken)
    assert not token_matches([record()], b"alice", b"tok-1", NOW)


def test_new_tokens_come_first_and_the_list_stays_bounded_without_expired_ones() -> None:
    expired = record(token=b"old", expires=int(NOW) - 1)
    kept: object = with_token([expired], record(token=b"t0"), NOW)
    assert isinstance(kept, list) and len(kept) == 1
    for i in range(1, MAX_TOKENS + 2):
        kept = with_token(kept, record(token=b"t%d" % i), NOW)
    assert isinstance(kept, list) and len(kept) == MAX_TOKENS
    newest = MAX_TOKENS + 1
    assert token_matches(kept, b"alice", b"t%d" % newest, NOW)
    assert not token_matches(kept, b"alice", b"t0", NOW)  # pushed out


def test_an_unusable_list_is_replaced_by_the_new_token() -> None:
    assert len(with_token("garbage", record(), NOW)) == 1
    kept = with_token([TAMPERED["short salt"]], record(token=b"fresh"), NOW)
    assert len(kept) == 1 and token_matches(kept, b"alice", b"fresh", NOW)


def test_the_local_password_is_bound_to_its_user() -> None:
    local = make_local_password(b"alice", b"s3cret", CHEAP)
    assert local_password_matches(local, b"alice", b"s3cret")
    assert not local_password_matches(local, b"alice", b"S3cret")
    assert not local_password_matches(local, b"bob", b"s3cret")
    assert not local_password_matches(None, b"alice", b"s3cret")
    assert not local_password_matches({**local, "hash": "00" * 32}, b"alice", b"s3cret")
    # Not usable as the upstream password's verifier either (another kind of secret).
    assert not verifier.matches(local, b"s3cret")


def test_stored_in_the_account_record_next_to_the_verifier(tmp_path: Path) -> None:
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "alice"))
        store.write(lambda tx: offline_logins.set_tokens(tx, account, [record()]))
        local = make_local_password(b"alice", b"pw", CHEAP)
        store.write(lambda tx: offline_logins.set_local_password(tx, account, local))
        tokens = store.read(lambda tx: offline_logins.get_tokens(tx, account))
        assert token_matches(tokens, b"alice", b"tok-1", NOW)
        assert store.read(lambda tx: offline_logins.get_local_password(tx, account)) == local
        assert store.read(lambda tx: accounts.get_verifier(tx, account)) is None
        store.write(
            lambda tx: offline_logins.set_mechanisms(tx, "imaps://x", frozenset({"XOAUTH2"}))
        )
        assert store.read(lambda tx: offline_logins.get_mechanisms(tx, "imaps://x")) == {"XOAUTH2"}
        assert store.read(lambda tx: offline_logins.get_mechanisms(tx, "imaps://y")) is None
    finally:
        store.close()
