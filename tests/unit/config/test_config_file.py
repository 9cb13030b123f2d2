"""The configuration file: every mistake made on purpose, each reported with its line."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from imapproxy.config import Freshness, Listener, PrefetchSettings
from imapproxy.config_file import ConfigFileError, load, parse_duration, parse_size, summary
from imapproxy.upstream.address import Security
from tests.support.tlscert import make_self_signed

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "imapproxy.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imapproxy.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _problems(tmp_path: Path, text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ConfigFileError) as caught:
        load(_write(tmp_path, text), prepare=False)
    return [(p.line, p.message) for p in caught.value.problems]


def _one_problem(tmp_path: Path, text: str, line: int | None, needle: str) -> None:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0][0] == line, problems
    assert needle in problems[0][1], problems


MINIMAL = """
[[upstream]]
url = "imap+plain://127.0.0.1:1"
"""


# a valid file --------------------------------------------------------------------------


def test_minimal_file_takes_the_defaults(tmp_path: Path) -> None:
    config = load(_write(tmp_path, MINIMAL), prepare=False)
    assert config.listeners == (Listener("127.0.0.1", 1143),)
    (upstream,) = config.upstreams
    assert upstream.name == "127.0.0.1"
    assert upstream.address.security is Security.PLAIN
    assert upstream.logins == () and upstream.listeners == ()
    assert upstream.prefetch == PrefetchSettings()
    assert upstream.freshness == Freshness()
    assert upstream.cache_limit is None
    assert config.account_idle_seconds == 30 * 60
    assert config.server_tls is None


def test_every_setting_is_read(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path)
    config = load(
        _write(
            tmp_path,
            f"""
            [server]
            state_dir = "state"
            listen = ["127.0.0.1:2143", "[::1]:2144"]
            listen_tls = "127.0.0.1:2993"
            tls_cert = "{pair.cert.name}"
            tls_key = "{pair.key.name}"
            allow_plaintext_listen = true
            account_idle_timeout = "2h"

            [[upstream]]
            name = "a"
            url = "imaps://imap.a.test"
            ca_file = "{pair.cert.name}"
            logins = ["*@a.test", "admin"]
            cache_limit = "1.5G"
            prefetch.folders = ["INBOX"]
            prefetch.max_age_days = 7
            prefetch.max_body_size = 1048576
            freshness = {{ sync_interval = "90s", poll_interval = 30 }}

            [[upstream]]
            name = "b"
            url = "imap://imap.b.test:1143"
            listeners = ["[::1]:2144"]
            [upstream.prefetch]
            folders = []
            """,
        ),
        prepare=False,
    )
    assert config.listeners == (
        Listener("127.0.0.1", 2143),
        Listener("::1", 2144),
        Listener("127.0.0.1", 2993, implicit_tls=True),
    )
    assert config.state_dir == tmp_path / "state"  # relative to the file
    assert not config.state_dir.exists()  # check-config changes nothing on disk
    assert config.tls_cert == pair.cert and config.server_tls is not None
    assert config.allow_plaintext_listen is True
    assert config.account_idle_seconds == 7200
    a, b = config.upstreams
    assert (a.name, a.address.url(), a.ca_file) == ("a", "imaps://imap.a.test:993", pair.cert)
    assert a.logins == ("*@a.test", "admin")
    assert a.cache_limit == int(1.5 * 2**30)
    assert a.prefetch == PrefetchSettings(("INBOX",), 7, 2**20)
    assert a.freshness == Freshness(90.0, 30.0)
    assert (b.name, b.address.url(), b.listeners) == (
        "b",
        "imap://imap.b.test:1143",
        ("[::1]:2144",),
    )
    assert b.prefetch.folders == () and b.prefetch.max_age_days == 90
    line = summary(config)
    assert "\n" not in line and "2 upstreams" in line and "a (imaps://imap.a.test:993)" in line


def test_serving_creates_the_state_directory(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nstate_dir = "deep/state"\n' + MINIMAL)
    config = load(path)
    assert config.state_dir.is_dir()
    assert config.state_dir.stat().st_mode & 0o777 == 0o700


def test_the_example_file_is_valid(tmp_path: Path) -> None:
    """examples/imapproxy.toml, with the files it names (relative to it) in place."""
    shutil.copy(EXAMPLE, tmp_path / "imapproxy.toml")
    pair = make_self_signed(tmp_path, "cert")
    pair.cert.rename(tmp_path / "cert.pem")
    pair.key.rename(tmp_path / "key.pem")
    shutil.copy(tmp_path / "cert.pem", tmp_path / "example-net-ca.pem")
    config = load(tmp_path / "imapproxy.toml", prepare=False)
    assert [u.name for u in config.upstreams] == ["work", "personal", "default"]
    assert config.upstreams[1].listeners == ("127.0.0.1:1144",)


@pytest.mark.parametrize(
    ("text", "size"),
    [(0, 0), (1024, 1024), ("25M", 25 * 2**20), ("2 GiB", 2 * 2**30), ("10k", 10240), ("3B", 3)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1", "5X", True, 1.5, "M"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (2.5, 2.5),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("0.5", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", -1, "5w", False, float("inf"), "m"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# every mistake, with its line ------------------------------------------------------


def test_syntax_error_names_tomllibs_line(tmp_path: Path) -> None:
    _one_problem(
        tmp_path,
        """
        [[upstream]]
        name = "a"
        url = "imaps://unterminated
        """,
        3,
        "not valid TOML",
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read it"):
        load(tmp_path / "missing.toml", prepare=False)


def test_no_upstream(tmp_path: Path) -> None:
    _one_problem(tmp_path, '[server]\nlisten = "127.0.0.1:1143"\n', None, "no [[upstream]]")


def test_upstream_must_be_an_array_of_tables(tmp_path: Path) -> None:
    _one_problem(tmp_path, 'upstream = "imaps://x"\n', 1, "write [[upstream]]")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        # typos are never ignored, wherever they are
        ("sever = 1\n" + MINIMAL, 1, "unknown key 'sever' at the top level"),
        ('[server]\n\nlisen = "127.0.0.1:1"\n' + MINIMAL, 3, "unknown key 'lisen' in [server]"),
        (MINIMAL + 'ur1 = "x"\n', 3, "unknown key 'ur1' in [[upstream]]"),
        (MINIMAL + "[upstream.prefetch]\nfolders = []\nmax_age = 3\n", 5, "unknown key 'max_age'"),
        (
            MINIMAL + 'prefetch = { foldrs = ["INBOX"] }\n',
            3,
            "unknown key 'foldrs' in [upstream.prefetch]",
        ),
        (MINIMAL + 'freshness.sync = "1m"\n', 3, "unknown key 'sync' in [upstream.freshness]"),
        (MINIMAL + "prefetch = 3\n", 3, "prefetch must be a table"),
        # listeners
        ('[server]\nlisten = "127.0.0.1:99999"\n' + MINIMAL, 2, "port out of range"),
        (
            '[server]\nlisten = [\n  "127.0.0.1:1143",\n  "nonsense",\n]\n' + MINIMAL,
            2,
            "expected HOST:PORT",
        ),
        ("[server]\nlisten = 1143\n" + MINIMAL, 2, "must be a string or a list of strings"),
        (
            '[server]\nlisten = ["127.0.0.1:1143", ""]\n' + MINIMAL,
            2,
            "item 2 must be a non-empty string",
        ),
        (
            '[server]\nlisten = "127.0.0.1:1143"\nlisten_tls = "127.0.0.1:1993"\n' + MINIMAL,
            3,
            "listen_tls needs a certificate",
        ),
        (
            '[server]\nlisten = "192.0.2.1:143"\n' + MINIMAL,
            2,
            "refusing to listen on 192.0.2.1 without TLS",
        ),
        (
            '[server]\nlisten = ["127.0.0.1:1143", "127.0.0.1:1143"]\n' + MINIMAL,
            2,
            "already in listen",
        ),
        ('[server]\nallow_plaintext_listen = "yes"\n' + MINIMAL, 2, "expected true or false"),
        ("[server]\naccount_idle_timeout = -5\n" + MINIMAL, 2, "account_idle_timeout: a duration"),
        ('[server]\nstate_dir = ""\n' + MINIMAL, 2, "expected a non-empty string"),
        # upstreams
        ('[[upstream]]\nname = "a"\n', 1, "has no url"),
        ('[[upstream]]\nurl = "ftp://x"\n', 2, "unsupported upstream URL"),
        ('[[upstream]]\nurl = "imaps://user:pw@x"\n', 2, "must not carry credentials"),
        ("[[upstream]]\nurl = 993\n", 2, "url: expected a string"),
        (
            '[[upstream]]\nurl = "imaps://x"\nlogins = "*@x"\n',
            3,
            "logins must be a list of strings",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\nlogins = ["*@x", 3]\n',
            3,
            "item 2 must be a non-empty string",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\nlisteners = ["127.0.0.1:9"]\n',
            3,
            "is not a listener here (127.0.0.1:1143)",
        ),
        ('[[upstream]]\nurl = "imaps://x"\nca_file = "ca.pem"\n', 3, "no such file"),
        ('[[upstream]]\nurl = "imaps://x"\ncache_limit = 0\n', 3, "leave it out for no limit"),
        ('[[upstream]]\nurl = "imaps://x"\ncache_limit = "plenty"\n', 3, "expected a size"),
        (
            '[[upstream]]\nurl = "imaps://x"\n[upstream.prefetch]\nmax_age_days = -1\n',
            4,
            "whole number of days",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\n[upstream.prefetch]\nmax_age_days = "90"\n',
            4,
            "whole number of days",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\n[upstream.prefetch]\nmax_body_size = "big"\n',
            4,
            "max_body_size: expected a size",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\n[upstream.freshness]\n\nsync_interval = "soon"\n',
            5,
            "sync_interval: expected a duration",
        ),
        (
            '[[upstream]]\nurl = "imaps://x"\nfreshness = { poll_interval = 0 }\n',
            3,
            "more than 0 seconds",
        ),
    ],
)
def test_mistake_is_reported_at_its_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    _one_problem(tmp_path, text, line, needle)


def test_missing_certificate_files(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, '[server]\n\ntls_cert = "nowhere.pem"\ntls_key = "nowhere.key"\n' + MINIMAL
    )
    assert [line for line, _ in problems] == [3, 4]
    assert all("no such file" in message for _, message in problems)


def test_tls_cert_without_key(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path)
    _one_problem(tmp_path, f'[server]\ntls_cert = "{pair.cert}"\n' + MINIMAL, 2, "go together")


def test_unusable_key_is_blamed_on_tls_key(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path)
    pair.key.chmod(0o644)  # every user could read it
    _one_problem(
        tmp_path,
        f'[server]\ntls_cert = "{pair.cert}"\ntls_key = "{pair.key}"\n' + MINIMAL,
        3,
        "tls_key",
    )


def test_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    _one_problem(
        tmp_path,
        '[[upstream]]\nurl = "imaps://x"\n\nca_file = "ca.pem"\n',
        4,
        "not a PEM certificate",
    )


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    _one_problem(tmp_path, '[server]\nstate_dir = "afile"\n' + MINIMAL, 2, "not a directory")


def test_second_upstream_errors_point_into_the_second_table(tmp_path: Path) -> None:
    text = """
    [[upstream]]
    name = "a"
    url = "imaps://a.test"
    logins = ["*@a.test"]
    [upstream.prefetch]
    max_age_days = 1

    [[upstream]]
    name = "b"
    url = "imaps://b.test"
    [upstream.prefetch]
    max_age_days = -1
    """
    _one_problem(tmp_path, text, 12, "whole number of days")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (
            '[[upstream]]\nname = "a"\nurl = "imaps://a.test"\nlogins = ["x"]\n[[upstream]]\nname = "a"\nurl = "imaps://b.test"\n',
            6,
            "a second upstream named 'a'",
        ),
        (
            '[[upstream]]\nname = "a"\nurl = "imaps://a.test"\nlogins = ["x"]\n[[upstream]]\nname = "b"\nurl = "imaps://a.test:993"\n',
            7,
            "already has url imaps://a.test:993",
        ),
        (
            '[[upstream]]\nname = "all"\nurl = "imaps://a.test"\n\n[[upstream]]\nname = "b"\nurl = "imaps://b.test"\nlogins = ["*@b.test"]\n',
            5,
            "'b' is never used: upstream 'all' above takes every login",
        ),
    ],
)
def test_upstreams_that_cannot_work_together(
    tmp_path: Path, text: str, line: int, needle: str
) -> None:
    _one_problem(tmp_path, text, line, needle)


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = """
    # a comment with [brackets] and key = "value"
    [server]
    listen = "127.0.0.1:70000"
    typo = true

    [[upstream]]
    url = "gopher://a.test"
    [[upstream]]
    url = "imaps://b.test"
    cache_limit = -1
    """
    problems = _problems(tmp_path, text)
    assert [line for line, _ in problems] == [3, 4, 7, 10]
    assert "port out of range" in problems[0][1]
    assert "unknown key 'typo'" in problems[1][1]
    assert "unsupported upstream URL" in problems[2][1]
    assert "cannot be negative" in problems[3][1]
    rendered = str(ConfigFileError(Path("f.toml"), [problems_as(p) for p in problems][:1]))
    assert rendered.startswith("f.toml:3: ")


def problems_as(item: tuple[int | None, str]) -> object:
    from imapproxy.config_file import Problem

    return Problem(*item)


def test_multiline_values_do_not_shift_lines(tmp_path: Path) -> None:
    """Text inside a multi-line string or array that looks like a key is not one."""
    text = '''
    [[upstream]]
    name = """
    url = "imaps://not-this-line"
    [server]
    """
    url = "imaps://a.test"
    logins = [
      "x = 1",  # url = "nor this"
      "[[upstream]]",
    ]
    "cache_limit" = "none"
    '''
    problems = _problems(tmp_path, text)
    assert problems == [
        (11, 'cache_limit: expected a size: bytes, or a string such as "25M" or "2G"')
    ]


def test_sockets_from_systemd(tmp_path: Path) -> None:
    config = load(
        _write(
            tmp_path,
            """
            [server]
            listen = ["systemd:domain=INET:name=imap", "systemd:domain=INET6:index=1"]
            [[upstream]]
            url = "imaps://a.test"
            listeners = ["systemd:domain=INET:name=imap"]
            """,
        ),
        prepare=False,
    )
    first, second = config.listeners
    assert first.endpoint == "systemd:domain=INET:name=imap" and not first.loopback
    assert second.describe() == "systemd:domain=INET6:index=1"
    assert config.upstreams[0].listeners == ("systemd:domain=INET:name=imap",)


@pytest.mark.parametrize(
    "endpoint", ["systemd:domain=INET", "systemd:domain=IPX:name=imap", "systemd:name=imap"]
)
def test_bad_systemd_socket(tmp_path: Path, endpoint: str) -> None:
    _one_problem(
        tmp_path,
        f'[server]\n\nlisten = "{endpoint}"\n' + MINIMAL,
        3,
        "expected systemd:domain=INET:name=NAME",
    )
