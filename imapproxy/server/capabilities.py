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
)


def capabilities(authenticated: bool, tls_active: bool, starttls_available: bool) -> list[str]:
    caps = list(BASE)
    if not authenticated:
        caps.append("AUTH=PLAIN")
        if starttls_available and not tls_active:
            caps.append("STARTTLS")
    return caps
