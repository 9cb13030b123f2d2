"""The ``encrypt`` setting of an upstream, in the file and on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from imapproxy.cli import _config, _parser
from imapproxy.config_file import ConfigFileError, load, summary


def _load(tmp_path: Path, extra: str) -> object:
    path = tmp_path / "imapproxy.toml"
    path.write_text('[[upstream]]\nurl = "imaps://imap.example.org"\n' + extra, encoding="utf-8")
    return load(path, prepare=False)


def test_off_by_default_and_on_when_asked(tmp_path: Path) -> None:
    (upstream,) = _load(tmp_path, "").upstreams  # type: ignore[attr-defined]
    assert upstream.encrypt is False
    config = _load(tmp_path, "encrypt = true\n")
    (upstream,) = config.upstreams  # type: ignore[attr-defined]
    assert upstream.encrypt is True
    assert "encrypted" in summary(config)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_anything_but_a_boolean_is_an_error_on_its_line(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _load(tmp_path, f"encrypt = {value}\n")
    (problem,) = caught.value.problems
    assert problem.line == 3 and "encrypt" in problem.message, problem


def test_the_command_line_flag(tmp_path: Path) -> None:
    args = _parser().parse_args(
        [
            "serve",
            "--upstream",
            "imaps://imap.example.org",
            "--state-dir",
            str(tmp_path),
            "--encrypt",
        ]
    )
    assert _config(args).upstreams[0].encrypt is True
    args = _parser().parse_args(
        ["serve", "--upstream", "imaps://imap.example.org", "--state-dir", str(tmp_path)]
    )
    assert _config(args).upstreams[0].encrypt is False
