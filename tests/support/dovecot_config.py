"""Rendering of a self-contained ``dovecot.conf`` for a throwaway test instance.

Every path lives under one directory and every listener is on loopback, so several
instances (parallel test sessions, a benchmark next to the tests) never share state.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

#: Special-use mailboxes created (and subscribed) for every user, as a real account has them.
SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


#: What Dovecot 2.3.19 offers after login; ``without_capabilities`` removes from it.
AUTHENTICATED_CAPABILITIES = (
    "IMAP4rev1",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=REFS",
    "THREAD=ORDEREDSUBJECT",
    "MULTIAPPEND",
    "URL-PARTIAL",
    "CATENATE",
    "UNSELECT",
    "CHILDREN",
    "NAMESPACE",
    "UIDPLUS",
    "LIST-EXTENDED",
    "I18NLEVEL=1",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "LIST-STATUS",
    "BINARY",
    "MOVE",
    "SNIPPET=FUZZY",
    "PREVIEW=FUZZY",
    "PREVIEW",
    "STATUS=SIZE",
    "SAVEDATE",
    "LITERAL+",
    "NOTIFY",
    "SPECIAL-USE",
)


def capability_setting(without: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """An ``imap_capability`` line announcing Dovecot's usual list minus ``without`` and
    plus ``extra`` (for tests of the proxy's fallbacks when an upstream lacks an
    extension, or of what it passes on when the upstream announces one); the commands
    themselves work as before, only the announcement changes."""
    if not without and not extra:
        return ""
    drop = {c.upper() for c in without}
    kept = [c for c in AUTHENTICATED_CAPABILITIES if c.upper() not in drop]
    return f"imap_capability = {' '.join(kept + list(extra))}\n"


@dataclass(frozen=True)
class MailUser:
    """The system account Dovecot runs mail processes as and that owns the maildirs."""

    name: str
    group: str
    uid: int
    gid: int


def resolve_mail_user() -> MailUser:
    """Pick the account for mail processes.

    Dovecot refuses to access mail as root, so as root we use the ``vmail`` system user
    (``scripts/test`` creates it). Unprivileged, Dovecot can only run as ourselves, which
    works as long as the config drops chroots and privileged users (see ``render_config``).
    """
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("vmail")
        except KeyError:
            raise RuntimeError(
                "system user 'vmail' is missing: run ./scripts/test (it creates it) "
                "or `useradd --system vmail`"
            ) from None
    else:
        entry = pwd.getpwuid(os.geteuid())
    return MailUser(
        name=entry.pw_name,
        group=grp.getgrgid(entry.pw_gid).gr_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
    )


@dataclass(frozen=True)
class ConfigPaths:
    """Where a test instance keeps its files; all under ``root``."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def startup_log(self) -> Path:
        return self.root / "dovecot.startup.log"

    @property
    def passwd(self) -> Path:
        """Directory of one passwd-file per user (see ``render_config`` for why)."""
        return self.root / "users"

    @property
    def oauth2(self) -> Path:
        return self.root / "oauth2.conf.ext"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    @property
    def master_pid(self) -> Path:
        return self.base_dir / "master.pid"


_NO_AUTH_PENALTY = """
# Tests log in with wrong passwords on purpose. Dovecot then delays each failure (2 s)
# and, through anvil's auth-penalty socket, every later login from 127.0.0.1 (2-15 s) until
# one succeeds. Both would make test timing depend on test order, so both are off; the
# unreachable socket makes auth log one "Permission denied" error at startup.
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""


def _mailbox_blocks() -> str:
    return "\n".join(
        f"  mailbox {name} {{\n    special_use = {flag}\n    auto = subscribe\n  }}"
        for name, flag in SPECIAL_USE.items()
    )


def _unprivileged_block(user: MailUser) -> str:
    """Settings that let a non-root master run every service as the invoking user."""
    return f"""
default_login_user = {user.name}
default_internal_user = {user.name}
default_internal_group = {user.group}
service imap-urlauth-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"""


def render_config(
    paths: ConfigPaths,
    *,
    instance_name: str,
    port: int,
    tls_port: int,
    cert: Path,
    key: Path,
    user: MailUser,
    host: str = "127.0.0.1",
    default_auth_penalty: bool = False,
    without_capabilities: tuple[str, ...] = (),
    oauth2_introspection: str | None = None,
    extra_capabilities: tuple[str, ...] = (),
    compress: bool = False,
) -> str:
    """Return the text of ``dovecot.conf`` for one isolated instance.

    ``default_auth_penalty`` keeps Dovecot's own failed-login delays (``auth_failure_delay``
    and anvil's auth penalty) instead of switching them off: for measuring what a brute
    force costs against a stock Dovecot, which the proxy's own limiter must match.
    ``without_capabilities`` hides those extensions from the post-login CAPABILITY.
    ``oauth2_introspection``: the URL of a token introspection endpoint; XOAUTH2 and
    OAUTHBEARER are then offered, their tokens checked there (``oauth2_block``).
    ``compress``: load ``imap_zlib`` and offer COMPRESS=DEFLATE (RFC 4978).
    """
    if compress:
        extra_capabilities = (*extra_capabilities, "COMPRESS=DEFLATE")
    root = paths.root
    unprivileged = _unprivileged_block(user) if os.geteuid() != 0 else ""
    login_chroot = "  chroot =\n" if os.geteuid() != 0 else ""
    return f"""# Generated by tests/support/dovecot_config.py for a throwaway test instance.
instance_name = {instance_name}
base_dir = {paths.base_dir}
state_dir = {paths.state_dir}
log_path = {paths.log}
info_log_path = {paths.log}
debug_log_path = {paths.log}

protocols = imap
listen = {host}
shutdown_clients = yes

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2 oauthbearer" if oauth2_introspection else ""}

first_valid_uid = {user.uid}
last_valid_uid = {user.uid}
first_valid_gid = {user.gid}
last_valid_gid = {user.gid}
mail_location = maildir:{root}/mail/%u/Maildir
mail_max_userip_connections = 100
{_ZLIB if compress else ""}{capability_setting(without_capabilities, extra_capabilities)}{"" if default_auth_penalty else _NO_AUTH_PENALTY}{unprivileged}
# One file per user: Dovecot re-checks a passwd-file at most once per second, so a user
# added to a shared file right after a login would be unknown for up to a second; a file
# it has never opened is read on first use.
{oauth2_block(paths) if oauth2_introspection else ""}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {paths.passwd}/%u
}}
userdb {{
  driver = static
  args = uid={user.uid} gid={user.gid} home={root}/mail/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
{_mailbox_blocks()}
}}

service imap-login {{
{login_chroot}  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {tls_port}
    ssl = yes
  }}
}}
"""


_ZLIB = """mail_plugins = $mail_plugins zlib
protocol imap {
  mail_plugins = $mail_plugins imap_zlib
}
"""


def oauth2_block(paths: ConfigPaths) -> str:
    """The OAuth2 passdb first (tokens, checked by the introspection endpoint that
    ``oauth2_settings`` names); passwords still go to the passwd-file passdb after it,
    which Dovecot skips for the OAuth mechanisms (and the oauth2 one for passwords)."""
    return f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {paths.oauth2}
}}
"""


def oauth2_settings(introspection_url: str) -> str:
    """``oauth2.conf.ext``: POST the token, the answer's ``username`` must be the user."""
    return f"""introspection_mode = post
introspection_url = {introspection_url}
username_attribute = username
active_attribute = active
active_value = true
"""
