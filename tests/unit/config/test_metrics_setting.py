"""The metrics exporter's address: off by default, loopback only unless allowed, from
the TOML file (``[server] metrics``) or the command line (``--metrics``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from imapproxy.cli import _config, _parser
from imapproxy.config import ConfigError, Listener
from imapproxy.config_file import ConfigFileError, load


def _load(tmp_path: Path, server: str) -> object:
    path = tmp_path / "imapproxy.toml"
    text = f'[server]\n{server}\n[[upstream]]\nurl = "imap+plain://127.0.0.1:1"\n'
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load(path, prepare=False)


def test_off_by_default(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.metrics is None  # type: ignore[attr-defined]


def test_file_setting(tmp_path: Path) -> None:
    config = _load(tmp_path, 'metrics = "127.0.0.1:9143"')
    assert config.metrics == Listener("127.0.0.1", 9143)  # type: ignore[attr-defined]


def test_file_refuses_beyond_loopback_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _load(tmp_path, 'metrics = "0.0.0.0:9143"')
    (problem,) = caught.value.problems
    assert problem.line == 2 and "metrics_allow_remote" in problem.message


def test_file_allows_beyond_loopback_when_told(tmp_path: Path) -> None:
    config = _load(tmp_path, 'metrics = "0.0.0.0:9143"\nmetrics_allow_remote = true')
    assert config.metrics == Listener("0.0.0.0", 9143)  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ['"nonsense"', "9143", '""'])
def test_file_bad_values(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _load(tmp_path, f"metrics = {value}")
    (problem,) = caught.value.problems
    assert problem.line == 2 and "metrics" in problem.message


def _cli(tmp_path: Path, *extra: str) -> object:
    args = _parser().parse_args(
        ["serve", "--upstream", "imap+plain://127.0.0.1:1", "--state-dir", str(tmp_path), *extra]
    )
    return _config(args)


def test_command_line(tmp_path: Path) -> None:
    assert _cli(tmp_path).metrics is None  # type: ignore[attr-defined]
    config = _cli(tmp_path, "--metrics", "[::1]:9143")
    assert config.metrics == Listener("::1", 9143)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="--metrics-allow-remote"):
        _cli(tmp_path, "--metrics", "192.0.2.1:9143")
    config = _cli(tmp_path, "--metrics", "192.0.2.1:9143", "--metrics-allow-remote")
    assert config.metrics == Listener("192.0.2.1", 9143)  # type: ignore[attr-defined]


def test_command_line_and_file_do_not_mix(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["serve", "--config", str(tmp_path / "x.toml"), "--metrics", "127.0.0.1:9143"]
    )
    with pytest.raises(ConfigError, match="--metrics"):
        _config(args)
