"""Offline-login verifiers: parameters stored with them, bounded, and every doubt refuses."""

from __future__ import annotations

import time
from typing import Any

import pytest

from imapproxy.store import verifier
from imapproxy.store.verifier import CURRENT, ScryptParams

CHEAP = ScryptParams(2**10, 8, 1)


def good(password: bytes = b"secret", params: ScryptParams = CHEAP) -> dict[str, Any]:
    return verifier.make(password, params)


def test_a_verifier_stores_its_parameters_and_checks_the_password() -> None:
    record = good()
    assert record["scrypt"] == [2**10, 8, 1]
    assert verifier.matches(record, b"secret")
    assert not verifier.matches(record, b"Secret")
    assert not verifier.matches(record, b"")
    assert verifier.problem(record) is None
    assert "secret" not in repr(record)


def test_new_verifiers_use_the_current_cost() -> None:
    record = verifier.make(b"secret")
    assert record["scrypt"] == [CURRENT.n, CURRENT.r, CURRENT.p]
    assert verifier.matches(record, b"secret")
    assert not verifier.outdated(record)


def test_weaker_parameters_are_outdated_but_still_verify() -> None:
    record = good()
    assert verifier.outdated(record)  # 2**10 < current N
    assert verifier.matches(record, b"secret")  # raising the cost locks nobody out
    stronger = ScryptParams(CURRENT.n * 2, CURRENT.r, CURRENT.p)
    assert not verifier.outdated(verifier.make(b"x", stronger))
    assert verifier.outdated(verifier.make(b"x", ScryptParams(CURRENT.n, CURRENT.r - 1, 1)))


DROP = object()
MISMATCH = "hash='00' * 32"


def _tampered(label: str, key: str | None, value: object) -> object:
    record: dict[str, Any] = good()
    if key is None:
        return [record["scrypt"], record["salt"], record["hash"]]
    if value is DROP:
        del record[key]
    else:
        record[key] = value
    return record


TAMPERED = [
    ("not a dict", None, None),
    ("drop scrypt", "scrypt", DROP),
    ("drop salt", "salt", DROP),
    ("drop hash", "hash", DROP),
    ("extra key", "plain", "secret"),
    ("scrypt=None", "scrypt", None),
    ("scrypt='16384,8,1'", "scrypt", "16384,8,1"),
    ("scrypt=[1024, 8]", "scrypt", [1024, 8]),
    ("scrypt=[1024, 8, 1, 1]", "scrypt", [1024, 8, 1, 1]),
    ("scrypt=(1024, 8, 1)", "scrypt", (1024, 8, 1)),
    ("scrypt=[1024.0, 8, 1]", "scrypt", [1024.0, 8, 1]),
    ("scrypt=['1024', 8, 1]", "scrypt", ["1024", 8, 1]),
    ("scrypt=[True, 8, 1]", "scrypt", [True, 8, 1]),
    ("scrypt=[1024, True, 1]", "scrypt", [1024, True, 1]),
    ("scrypt=[1024, 8, None]", "scrypt", [1024, 8, None]),
    ("scrypt=[1000, 8, 1]", "scrypt", [1000, 8, 1]),  # not a power of two
    ("scrypt=[1, 8, 1]", "scrypt", [1, 8, 1]),
    ("scrypt=[0, 8, 1]", "scrypt", [0, 8, 1]),
    ("scrypt=[-1024, 8, 1]", "scrypt", [-1024, 8, 1]),
    ("scrypt=[1024, 0, 1]", "scrypt", [1024, 0, 1]),
    ("scrypt=[1024, 8, 0]", "scrypt", [1024, 8, 0]),
    ("scrypt=[2**40, 8, 1]", "scrypt", [2**40, 8, 1]),  # terabytes
    ("scrypt=[2**20, 8, 1]", "scrypt", [2**20, 8, 1]),  # 1 GiB
    ("scrypt=[2**14, 2**20, 1]", "scrypt", [2**14, 2**20, 1]),
    ("scrypt=[2**14, 8, 2**20]", "scrypt", [2**14, 8, 2**20]),  # hours of work
    ("salt=None", "salt", None),
    ("salt=b'0' * 32", "salt", b"0" * 32),
    ("salt='zz' * 16", "salt", "zz" * 16),
    ("salt='00' * 8", "salt", "00" * 8),
    ("salt=''", "salt", ""),
    ("hash=None", "hash", None),
    ("hash=12345", "hash", 12345),
    ("hash='00' * 16", "hash", "00" * 16),
    ("hash='not hex at all'", "hash", "not hex at all"),
    ("hash='00' * 32", "hash", "00" * 32),  # well formed, wrong: a plain mismatch
]


@pytest.mark.parametrize(("label", "key", "value"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_tampered_verifier_refuses_the_right_password_without_raising(
    label: str, key: str | None, value: object
) -> None:
    record = _tampered(label, key, value)
    started = time.monotonic()
    assert verifier.matches(record, b"secret") is False
    assert time.monotonic() - started < 2.0, "absurd parameters must be refused, not run"
    assert verifier.outdated(record) or label == MISMATCH
    if label != MISMATCH:
        reason = verifier.problem(record)
        assert reason and "secret" not in reason


@pytest.mark.parametrize("record", [None, {}, 0, "", b"\x00", [], object()])
def test_no_verifier_refuses(record: object) -> None:
    assert verifier.matches(record, b"secret") is False
    assert verifier.matches(record, b"") is False
    assert verifier.problem(record)
