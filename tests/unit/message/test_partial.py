"""partial: BODY[...]<start.length> slicing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapproxy.message import partial


def test_window_inside_data() -> None:
    assert partial(b"0123456789", 2, 3) == b"234"


def test_length_past_end_is_clipped() -> None:
    assert partial(b"0123456789", 8, 100) == b"89"


def test_start_at_or_beyond_end_is_empty() -> None:
    assert partial(b"0123", 4, 10) == b""
    assert partial(b"0123", 99, 1) == b""


def test_no_length_means_to_the_end() -> None:
    assert partial(b"0123", 1, None) == b"123"


def test_zero_length() -> None:
    assert partial(b"0123", 1, 0) == b""


def test_negative_offsets_are_rejected() -> None:
    with pytest.raises(ValueError):
        partial(b"0123", -1, 2)
    with pytest.raises(ValueError):
        partial(b"0123", 0, -2)


@given(st.binary(max_size=64), st.integers(0, 80), st.integers(0, 80))
def test_windows_tile_the_data(data: bytes, start: int, length: int) -> None:
    window = partial(data, start, length)
    assert len(window) == max(0, min(length, len(data) - start))
    assert partial(data, 0, start) + window + partial(data, start + length, None) == data
