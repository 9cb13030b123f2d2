"""What we advertise: exactly what works end to end through the proxy, online or not."""

from __future__ import annotations

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
    "SORT",
    "SORT=DISPLAY",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
)


def capabilities(
    authenticated: bool,
    tls_active: bool,
    starttls_available: bool,
    login_disabled: bool = False,
) -> list[str]:
    """``login_disabled``: no mechanism is offered until STARTTLS (RFC 9051 §6.2.3), so
    clients do not send a password in clear only to be refused."""
    caps = list(BASE)
    if authenticated:
        caps.append("COMPRESS=DEFLATE")  # RFC 4978, after login as Dovecot offers it
    if not authenticated:
        caps.append("LOGINDISABLED" if login_disabled else "AUTH=PLAIN")
        if starttls_available and not tls_active:
            caps.append("STARTTLS")
    return caps
