"""Feeding helpers shared by the protocol tests."""

from __future__ import annotations

from typing import Any

from imapproxy.protocol import (
    NEED_DATA,
    CommandReader,
    ContinuationRequired,
    LiteralChunk,
    ResponseReader,
)

SPLITS = ("whole", "bytewise", "halves")


def chunks_of(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    mid = len(data) // 2
    return [data[:mid], data[mid:]]


def read_commands(
    data: bytes, how: str = "whole", reader: CommandReader | None = None, accept: bool = True
) -> list[Any]:
    """Feed ``data`` split ``how``; accept every sync literal; merge chunks."""
    reader = reader or CommandReader()
    events: list[Any] = []
    for piece in chunks_of(data, how):
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, ContinuationRequired) and accept:
                reader.accept_literal()
            if isinstance(event, LiteralChunk) and events and isinstance(events[-1], LiteralChunk):
                events[-1] = LiteralChunk(events[-1].data + event.data)
            else:
                events.append(event)
    return events


def read_responses(data: bytes, how: str = "whole", reader: ResponseReader | None = None) -> list:
    reader = reader or ResponseReader()
    events = []
    for piece in chunks_of(data, how):
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
    return events
