"""The OAuth settings of an upstream: defaults, values, and mistakes with their line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from imapproxy.config import DEFAULT_OFFLINE_TOKEN_LIFETIME
from imapproxy.config_file import ConfigFileError, load


def _load(tmp_path: Path, extra: str) -> object:
    path = tmp_path / "imapproxy.toml"
    text = '[[upstream]]\nurl = "imaps://imap.example.org"\n' + textwrap.dedent(extra)
    path.write_text(text, encoding="utf-8")
    return load(path, prepare=False)


def test_defaults(tmp_path: Path) -> None:
    (upstream,) = _load(tmp_path, "").upstreams  # type: ignore[attr-defined]
    assert upstream.oauth is False
    assert upstream.offline_token_lifetime == DEFAULT_OFFLINE_TOKEN_LIFETIME == 86400


def test_values(tmp_path: Path) -> None:
    (upstream,) = _load(  # type: ignore[attr-defined]
        tmp_path, 'oauth = true\noffline_token_lifetime = "2h"\n'
    ).upstreams
    assert upstream.oauth is True and upstream.offline_token_lifetime == 7200


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('offline_token_lifetime = "400d"\n', "365 days"),
        ('offline_token_lifetime = "soon"\n', "duration"),
        ("offline_token_lifetime = -5\n", "duration"),
        ('oauth = "yes"\n', "oauth"),
    ],
)
def test_mistakes_name_their_line(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _load(tmp_path, extra)
    (problem,) = caught.value.problems
    assert problem.line == 3 and needle in problem.message, problem
