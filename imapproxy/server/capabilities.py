"""What we advertise: exactly what works end to end through the proxy, online or not."""

from __future__ import annotations

from imapproxy.server import rev2

BASE = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "ESEARCH",
    "CONDSTORE",
    "QRESYNC",
    "BINARY",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "STATUS=SIZE",
    "MULTIAPPEND",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
)


#: Offered once logged in, when the account's upstream offers them too: they are
#: carried out there (the replica alone cannot give them).
FROM_UPSTREAM = ("CREATE-SPECIAL-USE",)


def capabilities(
    authenticated: bool,
    tls_active: bool,
    starttls_available: bool,
    login_disabled: bool = False,
    upstream: frozenset[str] = frozenset(),
) -> list[str]:
    """``login_disabled``: no mechanism is offered until STARTTLS (RFC 9051 §6.2.3), so
    clients do not send a password in clear only to be refused. ``upstream``: what the
    account's upstream offered last (empty before login, or when never seen)."""
    caps = list(BASE)
    if rev2.offered(caps):
        caps.insert(1, "IMAP4rev2")
    if authenticated:
        caps.append("COMPRESS=DEFLATE")  # RFC 4978, after login as Dovecot offers it
    if not authenticated:
        caps.append("LOGINDISABLED" if login_disabled else "AUTH=PLAIN")
        if starttls_available and not tls_active:
            caps.append("STARTTLS")
    else:
        caps += [c for c in FROM_UPSTREAM if c in upstream]
        limit = upstream_append_limit(upstream)
        if limit is not None:
            caps.append(f"APPENDLIMIT={limit}")
    return caps


def upstream_append_limit(upstream: frozenset[str]) -> int | None:
    """The upstream's RFC 7889 ``APPENDLIMIT=n`` (None when it has none, or only
    per-mailbox limits): a bigger message would be refused on replay, long after the
    client heard OK, so the proxy announces and enforces it itself."""
    for capability in upstream:
        name, _, value = capability.partition("=")
        if name == "APPENDLIMIT" and value.isdigit():
            return int(value)
    return None
