"""Building server responses: every byte a client receives is formatted by protocol/."""

from __future__ import annotations

from imapproxy.protocol import (
    Atom,
    ContinuationRequest,
    ResponseCode,
    TaggedResponse,
    UntaggedData,
    UntaggedStatus,
    Value,
    format_response,
)


def code(name: str, *args: Value) -> ResponseCode:
    return ResponseCode(name, tuple(args))


def tagged(
    tag: str, status: str, text: str, response_code: ResponseCode | None = None
) -> list[bytes]:
    return format_response(TaggedResponse(tag, status, response_code, text))


def untagged_status(
    status: str, text: str, response_code: ResponseCode | None = None
) -> list[bytes]:
    return format_response(UntaggedStatus(status, response_code, text))


def untagged(name: str, *values: Value, number: int | None = None) -> list[bytes]:
    return format_response(UntaggedData(number, name, tuple(values)))


def continuation(text: str = "") -> list[bytes]:
    return format_response(ContinuationRequest(text.encode()))


def atoms(names: tuple[str, ...] | list[str]) -> tuple[Value, ...]:
    return tuple(Atom(n) for n in names)


class CommandFailed(Exception):
    """A handler's refusal: the session answers ``tag status [code] text``."""

    def __init__(
        self, text: str, status: str = "NO", response_code: ResponseCode | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = response_code
