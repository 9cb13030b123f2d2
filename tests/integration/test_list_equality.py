"""LIST and LSUB through the proxy answer what Dovecot answers directly (RFC 3501 §6.3.8-9).

A table of patterns and references runs against Dovecot and through the proxy over the
same account; the answers are compared as sets of (name, delimiter, attributes as a set),
since neither RFC nor clients rely on the order of the untagged responses.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

_LINE = re.compile(r'^\* (LIST|LSUB) \(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.*)$')

# Mailboxes beyond the standard account, and which of them are subscribed: a three-level
# hierarchy with only its leaf subscribed, a parent that exists with an unsubscribed one.
CREATED = ["parent/child/grandchild", "top", "top/sub", "top/sub/deep"]
SUBSCRIBED = ["parent/child/grandchild", "top/sub/deep", "INBOX"]

COMMANDS = [
    'LIST "" "*"',
    'LIST "" "%"',
    'LIST "" "%/%"',
    'LIST "" "*/sub"',
    'LIST "" "parent/%"',
    'LIST "" "parent"',
    'LIST "" "parent/*"',
    'LIST "parent/" "%"',
    'LIST "parent" "/%"',
    'LIST "parent/" "/%"',
    'LIST "top/" "*"',
    'LIST "TOP/" "*"',
    'LIST "" "t%"',
    'LIST "" "top%"',
    'LIST "" "inbox"',
    'LIST "" "InBoX"',
    'LIST "" "InBoX*"',
    'LIST "" "nothere"',
    'LIST "" "/"',
    'LIST "/" "%"',
    'LIST "" ""',
    'LIST "parent" ""',
    'LIST "parent/child/" ""',
    'LSUB "" "*"',
    'LSUB "" "%"',
    'LSUB "" "parent/%"',
    'LSUB "" "parent/child/%"',
    'LSUB "" "top/%"',
    'LSUB "top/" "%"',
    'LSUB "" "%/%"',
    'LSUB "" "inbox"',
    'LSUB "" "nothere"',
    'LSUB "" "gone/*"',
]


def _name(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _answer(client: RawClient, command: str) -> tuple[str, set[tuple[str, str, frozenset[str]]]]:
    untagged, tagged = client.command(command)
    rows = set()
    for line in untagged:
        match = _LINE.match(line)
        assert match is not None, (command, line)
        attributes = frozenset(a.upper() for a in match.group(2).split())
        rows.add((match.group(1), _name(match.group(4)), match.group(3), attributes))
    return tagged.split()[0], {(name, delim, attrs) for _, name, delim, attrs in rows}


def _prepare(dovecot: Dovecot, account: Account) -> None:
    with RawClient(dovecot.host, dovecot.port, account.user, account.password) as client:
        for name in CREATED:
            client.ok(f'CREATE "{name}"')
        untagged, _ = client.command('LSUB "" "*"')
        for line in untagged:
            match = _LINE.match(line)
            assert match is not None
            client.ok(f'UNSUBSCRIBE "{_name(match.group(4))}"')
        for name in SUBSCRIBED:
            client.ok(f'SUBSCRIBE "{name}"')
        # A subscription that outlived its mailbox (RFC 3501 §6.3.6): LSUB lists it.
        client.ok('CREATE "gone/child"')
        client.ok('SUBSCRIBE "gone/child"')
        client.ok('DELETE "gone/child"')


def test_list_and_lsub_answer_like_dovecot(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    _prepare(dovecot, fresh_user)
    user, password = fresh_user.user, fresh_user.password
    with (
        RawClient(dovecot.host, dovecot.port, user, password) as direct,
        RawClient(proxy.host, proxy.port, user, password) as through,
    ):
        mismatches = []
        for command in COMMANDS:
            expected = _answer(direct, command)
            got = _answer(through, command)
            if got != expected:
                mismatches.append((command, expected, got))
        assert mismatches == []


@pytest.mark.parametrize(
    ("command", "row"),
    [
        # RFC 3501 §6.3.9: the level % stops at, holding a subscribed name, is \Noselect.
        ('LSUB "" "parent/%"', ("parent/child", '"/"', frozenset({"\\NOSELECT"}))),
        ('LIST "" "InBoX"', ("INBOX", '"/"', frozenset({"\\HASNOCHILDREN"}))),
        ('LIST "parent" ""', ("", '"/"', frozenset({"\\NOSELECT"}))),
    ],
)
def test_the_rfc_cases_are_there_through_the_proxy(
    dovecot: Dovecot,
    proxy: ProxyProcess,
    fresh_user: Account,
    command: str,
    row: tuple[str, str, frozenset[str]],
) -> None:
    _prepare(dovecot, fresh_user)
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        status, rows = _answer(client, command)
    assert status == "OK"
    assert row in rows


def test_a_subscription_without_its_mailbox_stays_offline_and_can_be_dropped(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    _prepare(dovecot, fresh_user)
    user, password = fresh_user.user, fresh_user.password
    with RawClient(proxy.host, proxy.port, user, password) as through:
        assert ("gone/child", '"/"', frozenset()) in _answer(through, 'LSUB "" "*"')[1]
        assert proxy.relay is not None
        proxy.relay.cut()
        assert ("gone/child", '"/"', frozenset()) in _answer(through, 'LSUB "" "*"')[1]
        through.ok('UNSUBSCRIBE "gone/child"')
        assert ("gone/child", '"/"', frozenset()) not in _answer(through, 'LSUB "" "*"')[1]
        proxy.relay.resume()
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        deadline = time.monotonic() + 20
        while ("gone/child", '"/"', frozenset()) in _answer(direct, 'LSUB "" "*"')[1]:
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.3)
