"""``imapproxy check-config FILE`` and ``serve --config FILE`` as a user meets them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.net import LOOPBACK, free_port
from tests.support.tlscert import make_self_signed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "imapproxy.toml"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imapproxy", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "imapproxy.toml")
    pair = make_self_signed(tmp_path, "cert")
    pair.cert.rename(tmp_path / "cert.pem")
    pair.key.rename(tmp_path / "key.pem")
    shutil.copy(tmp_path / "cert.pem", tmp_path / "example-net-ca.pem")
    result = _run("check-config", str(tmp_path / "imapproxy.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration OK:"), result.stdout
    assert "3 upstreams: work (imaps://imap.example.org:993, encrypted)" in lines[0]


def test_check_config_names_the_line_of_each_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[server]\n"
        'listen = "127.0.0.1:1143"\n'
        "account_idle_timout = 60\n"  # typo
        "\n"
        "[[upstream]]\n"
        'url = "imaps://a.test"\n'
        "[upstream.prefetch]\n"
        "max_age_days = -3\n"
    )
    result = _run("check-config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}:3: unknown key 'account_idle_timout' in [server] (known: account_idle_timeout, "
        "allow_plaintext_listen, listen, listen_tls, login_delay, login_delay_max, metrics, "
        "metrics_allow_remote, state_dir, tls_cert, tls_key, write_wait)",
        f"{path}:8: max_age_days: expected a whole number of days, 0 or more",
    ]


def test_check_config_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[upstream]]\nurl = "imaps://a.test"\nlogins = ["x",\n\n[server]\n')
    result = _run("check-config", str(path))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{path}:5: not valid TOML: "), line


def test_check_config_changes_nothing_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[server]\nstate_dir = "state"\n[[upstream]]\nurl = "imaps://a.test"\n')
    result = _run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state").exists()


def test_serve_with_a_bad_config_prints_each_error_and_exits(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[upstream]]\nurl = "ftp://a.test"\nlogin = ["*"]\n')
    result = _run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("imapproxy: error: ") for line in lines)
    assert f"{path}:2: unsupported upstream URL" in lines[0]
    assert f"{path}:3: unknown key 'login'" in lines[1]


def test_config_and_flags_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[[upstream]]\nurl = "imaps://a.test"\n')
    result = _run("serve", "--config", str(path), "--upstream", "imaps://b.test")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "imapproxy: error: --config and --upstream: put those settings in the file"
    )


def test_serve_needs_an_upstream_or_a_config() -> None:
    result = _run("serve", "--listen", f"{LOOPBACK}:{free_port()}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "imapproxy: error: give --upstream URL (one upstream) or --config FILE"
    )


def test_bad_idle_timeout_flag() -> None:
    result = _run(
        "serve",
        "--upstream",
        "imaps://a.test",
        "--account-idle-timeout",
        "soon",
        "--listen",
        f"{LOOPBACK}:{free_port()}",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("imapproxy: error: --account-idle-timeout: expected a duration")
