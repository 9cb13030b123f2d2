"""What can go wrong talking to the upstream, in terms the server can answer with."""

from __future__ import annotations

from imapproxy.protocol import ResponseCode


class UpstreamError(Exception):
    """Base of upstream failures."""


class UpstreamUnavailable(UpstreamError):
    """The upstream cannot be reached or the connection broke: answer NO [UNAVAILABLE]."""


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection could be made: nothing of the current operation was sent."""


class ClosedAsIdleEnded(UpstreamUnavailable):
    """The connection closed as IDLE ended, before the command sent behind DONE was
    answered (a BYE already on its way, say): whether the upstream read the command is
    unknown, so only a command that changes nothing may simply go again."""


class UpstreamBusy(UpstreamUnavailable):
    """Another operation held the account's link longer than a client may wait: nothing
    was sent; the replica answers (the upstream is not known to be down)."""


class UpstreamRefused(UpstreamError):
    """The upstream answered NO or BAD; its code and text are passed on to the client."""

    def __init__(self, status: str, code: ResponseCode | None, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.code = code
        self.text = text


class AuthenticationFailed(UpstreamRefused):
    """The upstream rejected the credentials."""
