# Shared setup steps for scripts/test and scripts/serve (sourced, not executed).
#
# Every step checks before acting, so running it again on a prepared machine costs a few
# stat calls and prints nothing.

# Run a command as root: directly when we are root, via sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# Install the given Debian packages (quietly; apt-get update once first).
apt_install() {
    echo "setup: installing $*" >&2
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Python 3 with venv: all the proxy itself needs from the system.
python_packages_missing() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo python3 python3-venv
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo python3-venv
    fi
}

ensure_python() {
    local missing
    missing="$(python_packages_missing)"
    [ -z "$missing" ] || apt_install $missing
}

# What the test suite needs besides Python: Dovecot's IMAP server, openssl, mbsync (a real
# synchronizing client across an offline period) and systemd-analyze (the unit files are
# checked with `systemd-analyze verify`; no running systemd is needed for that).
ensure_system_packages() {
    local missing=()
    command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # mbsync: a real synchronizing client across an offline period (test_mbsync.py).
    command -v mbsync >/dev/null 2>&1 || missing+=(isync)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    # shellcheck disable=SC2207
    missing+=($(python_packages_missing))
    [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
}

# Dovecot will not access mail as root; tests run as root use this system user instead.
ensure_vmail_user() {
    getent passwd vmail >/dev/null 2>&1 && return 0
    as_root useradd --system --no-create-home --shell /usr/sbin/nologin vmail
}

# Create or reuse .venv and install the project editable with the given extras spec
# (e.g. ".[test]"). pip only runs again when pyproject.toml or the spec changed.
ensure_venv() {
    local spec="$1" stamp=".venv/.installed"
    local want
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $spec"
    if [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp"; then
        return 0
    fi
    local log
    log="$(mktemp)"
    # pip's output (including harmless warnings) is shown only if the install fails.
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" >"$log" 2>&1
    then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    echo "$want" >>"$stamp"
}
