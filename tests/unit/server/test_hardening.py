"""Review findings on the client-facing server: cleartext logins, unauthenticated APPEND,
pipelined input, wide UID sets and FETCH batching — each without an upstream."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy import protocol as p
from imapproxy.config import Config
from imapproxy.registry import LoginFailed
from imapproxy.server.connection import MAX_PIPELINED_INPUT, ClientConnection
from imapproxy.server.handlers import fetch as fetch_handler
from imapproxy.server.handlers import messages as messages_handler
from imapproxy.server.held_content import HeldContent
from imapproxy.server.session import ServerContext
from imapproxy.server.view import SelectedView, contains, intervals
from imapproxy.store import Store, cache, mailboxes, messages
from imapproxy.store.messages import Message
from imapproxy.types import UID, BlobId, UpstreamUID
from tests.support.tlscert import make_self_signed


class HeldRegistry:
    """A registry whose logins wait until the test answers them."""

    def __init__(self) -> None:
        self.answer: defer.Deferred[Any] = defer.Deferred()

    async def login(self, username: bytes, password: bytes, **attempt: Any) -> Any:
        return await self.answer


class Client:
    def __init__(self, registry: Any, **context: Any) -> None:
        self.clock = MemoryReactorClock()
        self.connection = ClientConnection(
            ServerContext(self.clock, registry, max_append=1024, **context)
        )
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        self.transport.clear()
        self.connection.dataReceived(data)
        return self.settle()

    def settle(self) -> list[bytes]:
        for _ in range(20):
            self.clock.advance(0)
        return self.transport.value().split(b"\r\n")[:-1]


# 1. cleartext passwords on a network listener ------------------------------------


@pytest.fixture
def exposed() -> Client:
    """A listener reachable from the network, with STARTTLS on offer, before STARTTLS."""
    return Client(HeldRegistry(), tls_options=object(), require_tls_for_login=True)


def test_exposed_listener_advertises_logindisabled_not_auth_plain(exposed: Client) -> None:
    greeting = exposed.transport.value()
    assert b"LOGINDISABLED" in greeting and b"STARTTLS" in greeting
    assert b"AUTH=PLAIN" not in greeting
    caps = exposed.send(b"a1 CAPABILITY\r\n")[0]
    assert b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps


def test_exposed_listener_refuses_login_and_authenticate_in_clear(exposed: Client) -> None:
    assert exposed.send(b"a1 LOGIN alice pw\r\n")[0].startswith(b"a1 NO [PRIVACYREQUIRED] ")
    ir = base64.b64encode(b"\0alice\0pw")
    assert exposed.send(b"a2 AUTHENTICATE PLAIN " + ir + b"\r\n")[0].startswith(
        b"a2 NO [PRIVACYREQUIRED] "
    )
    # Refused before the continuation: the client is never invited to send the password.
    assert exposed.send(b"a3 AUTHENTICATE PLAIN\r\n") == [
        exposed.transport.value().split(b"\r\n")[0]
    ]
    assert exposed.transport.value().startswith(b"a3 NO [PRIVACYREQUIRED] ")


def test_after_tls_login_is_offered_again(exposed: Client) -> None:
    assert exposed.connection.session is not None
    exposed.connection.session.tls_active = True
    caps = exposed.send(b"a1 CAPABILITY\r\n")[0]
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps


def test_loopback_listener_still_offers_login() -> None:
    client = Client(HeldRegistry(), tls_options=object())
    assert b"AUTH=PLAIN" in client.transport.value()
    assert b"LOGINDISABLED" not in client.transport.value()


@pytest.mark.parametrize(
    ("listen", "allow_plaintext", "required"),
    [
        ("192.0.2.2:1143", False, True),
        ("[2001:db8::1]:1143", False, True),
        ("192.0.2.2:1143", True, False),
        ("127.0.0.1:1143", False, False),
        ("localhost:1143", False, False),
    ],
)
def test_config_requires_tls_for_login_only_on_an_exposed_listener(
    tmp_path: Path, listen: str, allow_plaintext: bool, required: bool
) -> None:
    pair = make_self_signed(tmp_path)  # the files are loaded and checked now
    config = Config.build(
        "imap+plain://127.0.0.1:1",
        listen,
        tmp_path / "state",
        tls_cert=pair.cert,
        tls_key=pair.key,
        allow_plaintext_listen=allow_plaintext,
    )
    assert config.require_tls_for_login is required


# 2. APPEND before login, and pipelined input ---------------------------------------


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the APPEND buffers the server preallocated."""
    sizes: list[int] = []
    real = messages_handler.AppendInProgress

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, start: p.AppendStart) -> None:
            sizes.append(start.size)
            super().__init__(start)

    monkeypatch.setattr(messages_handler, "AppendInProgress", Spy)
    return sizes


def test_synchronizing_append_before_login_is_refused_without_continuation(
    allocations: list[int],
) -> None:
    client = Client(HeldRegistry())
    assert client.send(b"a1 APPEND INBOX {1000}\r\n") == [
        b"a1 BAD APPEND needs an authenticated session"
    ]
    assert client.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]
    assert allocations == []


def test_non_synchronizing_append_before_login_is_read_but_not_stored(
    allocations: list[int],
) -> None:
    client = Client(HeldRegistry())
    reply = client.send(b"a1 APPEND INBOX {1000+}\r\n" + b"x" * 1000 + b"\r\na2 NOOP\r\n")
    assert reply == [b"a1 BAD APPEND needs an authenticated session", b"a2 OK NOOP completed"]
    assert allocations == []


def test_append_after_login_still_preallocates_the_message(allocations: list[int]) -> None:
    registry = HeldRegistry()
    client = Client(registry)

    async def no_mailbox(name: str) -> None:
        return None

    runtime = SimpleNamespace(
        sessions=0,
        find_mailbox=no_mailbox,
        link=SimpleNamespace(upstream_capabilities=frozenset()),
    )
    client.send(b"a1 LOGIN alice pw\r\n")
    registry.answer.callback(runtime)
    assert client.settle()[-1].startswith(b"a1 OK ")
    assert client.send(b"a2 APPEND Nowhere {5}\r\n") == [b"+ Ready for literal data"]
    assert client.send(b"hello\r\n")[0].startswith(b"a2 NO [TRYCREATE]")
    assert allocations == [5]


def test_pipelined_input_behind_a_running_command_pauses_reading() -> None:
    registry = HeldRegistry()
    client = Client(registry)
    blank = b" " * 60000 + b"\r\n"  # ignored lines: only their bytes matter
    padding = blank * (MAX_PIPELINED_INPUT // len(blank) + 2)
    client.send(b"a1 LOGIN alice pw\r\n" + padding + b"a2 NOOP\r\n")
    assert client.transport.producerState == "paused"
    registry.answer.errback(LoginFailed())
    reply = client.settle()
    assert client.transport.producerState == "producing"
    assert reply[0].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert reply[-1] == b"a2 OK NOOP completed"


def test_small_pipelines_do_not_pause_reading() -> None:
    registry = HeldRegistry()
    client = Client(registry)
    client.send(b"a1 LOGIN alice pw\r\na2 NOOP\r\n")
    assert client.transport.producerState == "producing"


# 3. UID sets against the messages, not the UID space -------------------------------


def _view(tmp_path: Path, uids: list[int], full: bytes | None = None) -> SelectedView:
    store = Store(tmp_path / "replica")
    box = store.write(lambda tx: mailboxes.create(tx, 1, "INBOX"))

    def fill(tx: Any) -> None:
        for uid in uids:
            blob = BlobId(uid)
            message = Message(UID(uid), UpstreamUID(uid), (), "d", 100, 1, blob)
            messages.put(tx, 1, box.id, message)
            if full is not None:
                cache.put(tx, 1, blob, cache.Kind.FULL, full)

    store.write(fill)
    return SelectedView(store, box, readonly=False, origin=object())


def test_wide_uid_set_costs_the_messages_not_the_highest_uid(tmp_path: Path) -> None:
    view = _view(tmp_path, [3, 7, 2_000_000])
    began = time.process_time()
    pairs = view.resolve(p.parse_sequence_set("1:4294967295"), by_uid=True)
    assert time.process_time() - began < 0.1
    assert pairs == [(1, 3), (2, 7), (3, 2_000_000)]


def test_uid_sets_resolve_like_rfc_9051(tmp_path: Path) -> None:
    view = _view(tmp_path, [3, 7, 4_000_000_000])
    resolve = view.resolve
    assert resolve(p.parse_sequence_set("1:4294967295"), True) == [
        (1, 3),
        (2, 7),
        (3, 4_000_000_000),
    ]
    assert resolve(p.parse_sequence_set("4:6,1:2"), True) == []
    assert resolve(p.parse_sequence_set("7,3,7:3,1:*,*"), True)[0] == (1, 3)
    assert resolve(p.parse_sequence_set("4294967295:8"), True) == [(3, 4_000_000_000)]
    assert resolve(p.parse_sequence_set("4294967000:*"), True) == [(3, 4_000_000_000)]
    assert resolve(p.parse_sequence_set("2:*"), False) == [(2, 7), (3, 4_000_000_000)]
    assert resolve(p.parse_sequence_set("3,1"), False) == [(1, 3), (3, 4_000_000_000)]
    for beyond in ("4", "2:3,4", "1,5:6"):
        with pytest.raises(Exception, match="out of range"):
            resolve(p.parse_sequence_set(beyond), False)


def test_repeated_ranges_merge(tmp_path: Path) -> None:
    spans = intervals(p.parse_sequence_set(",".join(["1:*"] * 5000 + ["9:4294967295"])), 10)
    assert spans == [(1, 4294967295)]
    assert contains(spans, 4294967295) and not contains(spans, 0)
    gaps = intervals(p.parse_sequence_set("10:12,1,3:4,5"), 20)
    assert gaps == [(1, 1), (3, 5), (10, 12)]
    assert [n for n in range(14) if contains(gaps, n)] == [1, 3, 4, 5, 10, 11, 12]


# 4. FETCH of bodies: a few at a time ---------------------------------------------


class FetchSession:
    """What the FETCH handler uses of a session, counting answers between drains."""

    def __init__(self, view: SelectedView) -> None:
        self.selected = self.view = view

        async def ensure_content(*args: object) -> None:
            return None

        self.account = SimpleNamespace(
            store=view.store,
            ensure_content=ensure_content,
            status=SimpleNamespace(served=lambda count: None),
            content_read=lambda blobs: None,
        )
        self.connection = self
        self.pending = 0
        self.most_between_drains = 0
        self.after: list[Callable[[], None]] = []
        self.held = HeldContent(MemoryReactorClock(), lambda: None)

    def after_answer(self, work: Callable[[], None]) -> None:
        self.after.append(work)

    def send(self, chunks: list[bytes]) -> None:
        self.pending += sum(chunk.count(b" FETCH (") for chunk in chunks)

    def drained(self) -> defer.Deferred[None]:
        self.most_between_drains = max(self.most_between_drains, self.pending)
        self.pending = 0
        return defer.succeed(None)

    def updates(self, allow_expunge: bool = True) -> list[bytes]:
        return []


def _fetch(view: SelectedView, text: bytes) -> FetchSession:
    reader = p.CommandReader()
    reader.receive_data(text)
    command = reader.next_event()
    session = FetchSession(view)
    done = defer.ensureDeferred(fetch_handler.fetch(session, command))  # type: ignore[arg-type]
    outcome: list[object] = []
    done.addBoth(outcome.append)
    assert outcome and isinstance(outcome[0], list), outcome
    return session


def test_fetch_of_bodies_renders_few_messages_per_drain(tmp_path: Path) -> None:
    view = _view(tmp_path, list(range(1, 61)), full=b"Subject: x\r\n\r\nbody\r\n")
    session = _fetch(view, b"a1 FETCH 1:* (FLAGS BODY.PEEK[])\r\n")
    assert 0 < session.most_between_drains <= fetch_handler.BODY_RENDER_BATCH
    view.readonly = True  # RFC822 would set \Seen through the outbox otherwise
    session = _fetch(view, b"a1 UID FETCH 1:* RFC822\r\n")
    assert 0 < session.most_between_drains <= fetch_handler.BODY_RENDER_BATCH


def test_fetch_of_flags_keeps_the_large_batch(tmp_path: Path) -> None:
    view = _view(tmp_path, list(range(1, 61)))
    session = _fetch(view, b"a1 FETCH 1:* (FLAGS RFC822.SIZE)\r\n")
    assert session.most_between_drains == 60
