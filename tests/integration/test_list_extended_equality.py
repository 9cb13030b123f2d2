"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), CHILDREN (RFC 3348), the SPECIAL-USE
options (RFC 6154) and STATUS=SIZE (RFC 8438): through the proxy as Dovecot answers.

The same commands run against Dovecot and through the proxy over one account; rows are
compared as sets of (name, delimiter, attributes, CHILDINFO), STATUS responses as
item → value maps per mailbox (neither RFC nor clients rely on the order). ``\\Marked``
and ``\\UnMarked`` are left out: Dovecot computes them from its index at that moment.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

_LIST = re.compile(r'^\* LIST \(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") ("(?:[^"\\]|\\.)*"|\S+)(.*)$')
_STATUS = re.compile(r'^\* STATUS ("(?:[^"\\]|\\.)*"|\S+) \((.*)\)$')
_VOLATILE = {"\\MARKED", "\\UNMARKED"}

# Beyond the standard account: an unsubscribed level above a subscribed leaf, an
# existing unsubscribed parent with a subscribed child, a level with nothing subscribed.
CREATED = ["parent/child/grandchild", "top/sub/deep", "foo2", "foo2/bar1", "foo2/bar2", "eps2"]
SUBSCRIBED = ["top/sub/deep", "foo2/bar1", "eps2"]

COMMANDS = [
    'LIST (SUBSCRIBED) "" "*"',
    'LIST (SUBSCRIBED) "" "%"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*2"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
    'LIST (SUBSCRIBED REMOTE) "" "*"',
    'LIST (SUBSCRIBED) "" "gone/%"',
    'LIST "" "%" RETURN (CHILDREN)',
    'LIST () "" "%" RETURN (CHILDREN)',
    'LIST "" "*" RETURN (SUBSCRIBED CHILDREN)',
    'LIST "" "*" RETURN (SUBSCRIBED)',
    'LIST (SPECIAL-USE) "" "*"',
    'LIST (SPECIAL-USE) "" "*" RETURN (CHILDREN)',
    'LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"',
    'LIST "" "*" RETURN (SPECIAL-USE)',
    'LIST (REMOTE) "" "%"',
    'LIST () "" "%"',
    'LIST "" ("%")',
    'LIST "" ("INBOX" "Drafts" "top/%")',
    'LIST "" ("foo2" "foo2/*")',
    'LIST () "" ""',
    'LIST "" ("INBOX" "Sent" "top/*") RETURN (STATUS (MESSAGES UNSEEN SIZE))',
    'LIST "" "%" RETURN (STATUS (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE))',
    'LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES) CHILDREN)',
    'LIST (RECURSIVEMATCH) "" "*"',
    'LIST (REMOTE RECURSIVEMATCH) "" "*"',
    'LIST (NOSUCH) "" "*"',
    'LIST "" "*" RETURN (NOSUCH)',
    'LIST "" "*" RETURN (STATUS (NOSUCH))',
    "STATUS INBOX (SIZE MESSAGES)",
    "STATUS Sent (SIZE)",
    "STATUS Empty (SIZE UNSEEN)",
]

Rows = set[tuple[str, str, frozenset[str], str]]


def _name(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _answer(client: RawClient, command: str) -> tuple[str, Rows, dict[str, dict[str, str]]]:
    untagged, tagged = client.command(command)
    rows: Rows = set()
    statuses: dict[str, dict[str, str]] = {}
    for line in untagged:
        listed = _LIST.match(line)
        status = _STATUS.match(line)
        if listed is not None:
            attributes = frozenset(a.upper() for a in listed.group(1).split()) - _VOLATILE
            extra = listed.group(4).strip().upper().replace('"CHILDINFO"', "CHILDINFO")
            rows.add((_name(listed.group(3)), listed.group(2), attributes, extra))
        elif status is not None:
            items = status.group(2).split()
            statuses[_name(status.group(1))] = dict(zip(items[::2], items[1::2], strict=True))
        else:
            raise AssertionError((command, line))
    return tagged.split()[0], rows, statuses


def _without_uidvalidity(statuses: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    # UIDVALIDITY is the proxy's own (a client compares it only with itself): present,
    # not equal.
    return {
        name: {k: (v if k != "UIDVALIDITY" else "n") for k, v in items.items()}
        for name, items in statuses.items()
    }


def _prepare(dovecot: Dovecot, account: Account) -> None:
    with RawClient(dovecot.host, dovecot.port, account.user, account.password) as client:
        for name in CREATED:
            client.ok(f'CREATE "{name}"')
        for name in SUBSCRIBED:
            client.ok(f'SUBSCRIBE "{name}"')
        # A subscription that outlived its mailbox (RFC 3501 §6.3.6).
        client.ok('CREATE "gone/child"')
        client.ok('SUBSCRIBE "gone/child"')
        client.ok('DELETE "gone/child"')


@pytest.fixture
def account(dovecot: Dovecot, fresh_user: Account) -> Account:
    _prepare(dovecot, fresh_user)
    return fresh_user


def test_extended_list_and_status_answer_like_dovecot(
    dovecot: Dovecot, proxy: ProxyProcess, account: Account
) -> None:
    user, password = account.user, account.password
    with (
        RawClient(dovecot.host, dovecot.port, user, password) as direct,
        RawClient(proxy.host, proxy.port, user, password) as through,
    ):
        through.ok('LIST "" "*"')  # the proxy learns the folders (and syncs them) first
        mismatches = []
        for command in COMMANDS:
            status, rows, statuses = _answer(direct, command)
            expected = (status, rows, _without_uidvalidity(statuses))
            status, rows, statuses = _answer(through, command)
            got = (status, rows, _without_uidvalidity(statuses))
            if got != expected:
                mismatches.append((command, expected, got))
        assert mismatches == []


def test_the_rfc_cases_through_the_proxy(proxy: ProxyProcess, account: Account) -> None:
    """RFC 5258 §5 examples 8 and 9 on this account's hierarchy, and the RFC 5819 and
    RFC 8438 answer shapes."""
    with RawClient(proxy.host, proxy.port, account.user, account.password) as client:
        capabilities = set(client.ok("CAPABILITY")[0].split())
        assert {"LIST-EXTENDED", "LIST-STATUS", "CHILDREN", "STATUS=SIZE"} <= capabilities
        _, rows, _ = _answer(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        # An unsubscribed existing parent of a subscribed child; a level that is no mailbox.
        assert ("foo2", '"/"', frozenset(), '(CHILDINFO ("SUBSCRIBED"))') in rows
        assert ("top", '"/"', frozenset({"\\NONEXISTENT"}), '(CHILDINFO ("SUBSCRIBED"))') in rows
        # eps2 is subscribed and listed: attributes of its own, no children.
        assert ("eps2", '"/"', frozenset({"\\SUBSCRIBED"}), "") in rows
        _, rows, _ = _answer(client, 'LIST "" "%" RETURN (CHILDREN)')
        assert ("top", '"/"', frozenset({"\\NONEXISTENT", "\\HASCHILDREN"}), "") in rows
        assert ("eps2", '"/"', frozenset({"\\HASNOCHILDREN"}), "") in rows
        status, rows, statuses = _answer(
            client, 'LIST "" ("INBOX" "top/%") RETURN (STATUS (MESSAGES SIZE))'
        )
        assert status == "OK"
        assert ("top/sub", '"/"', frozenset({"\\NONEXISTENT"}), "") in rows
        assert set(statuses) == {"INBOX"}  # none for a name that is no mailbox
        assert int(statuses["INBOX"]["SIZE"]) > 0
        assert int(statuses["INBOX"]["MESSAGES"]) == len(account.mailboxes["INBOX"])
        status, _, _ = _answer(client, 'LIST (RECURSIVEMATCH) "" "*"')
        assert status == "BAD"


def test_extended_list_offline_is_answered_from_the_replica(
    proxy: ProxyProcess, account: Account
) -> None:
    with RawClient(proxy.host, proxy.port, account.user, account.password) as client:
        online = _answer(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
        client.ok("STATUS INBOX (MESSAGES)")  # known to the replica
        assert proxy.relay is not None
        proxy.relay.cut()
        offline = _answer(client, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
        status, _, statuses = _answer(client, 'LIST "" "INBOX" RETURN (STATUS (MESSAGES SIZE))')
    assert offline == online
    assert status == "OK"
    assert statuses["INBOX"]["MESSAGES"] == str(len(account.mailboxes["INBOX"]))
