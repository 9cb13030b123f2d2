"""A message APPENDed while the upstream is unreachable FETCHes like any other: its
ENVELOPE, BODYSTRUCTURE, BODY, RFC822.SIZE and INTERNALDATE, built by the proxy from
its bytes, equal what Dovecot answers for the same bytes — before replay and after.

One difference is allowed, and only in form: INTERNALDATE is the same instant, but the
proxy writes it in the zone the client gave (it cannot know the upstream's zone while
offline), Dovecot in its own local zone."""

from __future__ import annotations

import imaplib
import time

from imapproxy.protocol import Value, parse_datetime
from tests.integration.test_offline_writes import _until
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.structure_samples import fetch_values, samples

ITEMS = "ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE INTERNALDATE"
DATE = '"04-Jun-2024 10:00:00 +0200"'


def _append_all(client: imaplib.IMAP4, mailbox: str, messages: list[bytes]) -> list[int]:
    uids = []
    for raw in messages:
        typ, data = client.append(mailbox, "(\\Draft)", DATE, raw)
        assert typ == "OK", data
        code = data[0].decode()
        uids.append(int(code.split("APPENDUID ")[1].split("]")[0].split()[1]))
    return uids


def _answers(client: imaplib.IMAP4, mailbox: str, uids: list[int]) -> list[dict[str, Value]]:
    typ, data = client.select(mailbox, readonly=True)
    assert typ == "OK", data
    got = fetch_values(client, uids, ITEMS)
    out = []
    for uid in uids:
        item = {k: v for k, v in got[uid].items() if k != "UID"}
        date = item.pop("INTERNALDATE")
        assert isinstance(date, bytes)
        item["INSTANT"] = int(parse_datetime(date.decode().strip()).timestamp())
        out.append(item)
    return out


def test_offline_append_fetches_envelope_and_bodystructure_as_dovecot_does(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    messages = samples()
    direct = imaplib.IMAP4(dovecot.host, dovecot.port)
    direct.login(fresh_user.user, fresh_user.password)
    assert direct.create("Reference")[0] == "OK"
    expected = _answers(direct, "Reference", _append_all(direct, "Reference", messages))

    proxy = make_proxy()
    through = imaplib.IMAP4(proxy.host, proxy.port)
    through.login(fresh_user.user, fresh_user.password)
    through.select("Drafts")  # known to the replica while online
    proxy.relay.cut()
    uids = _append_all(through, "Drafts", messages)
    offline = _answers(through, "Drafts", uids)
    for raw, want, got in zip(messages, expected, offline, strict=True):
        assert got == want, raw[:200]

    proxy.relay.resume()
    subjects = len(messages)

    def replayed() -> bool:
        direct.select("Drafts", readonly=True)
        _, data = direct.search(None, "ALL")
        return len(data[0].split()) >= subjects

    _until(replayed, what="the drafts to reach the upstream")
    time.sleep(0.5)
    through.noop()
    after = _answers(through, "Drafts", uids)
    assert after == expected, "the answers changed once the upstream had the messages"
    through.logout()
    direct.logout()
