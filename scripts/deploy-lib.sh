# shellcheck shell=bash
# Helpers of the server side of `cargo xtask deploy` (see deploy.sh): validation, the layout
# under the deploy root, releases, the lock and deploy.log. Facts (units, layout names, states)
# come from contract.sh, generated from xtask/src/contract.rs.

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/contract.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/contract.sh"
fi

# One line of at most MAX characters: newlines and tabs become spaces (no pipes: a long value
# must not kill a pipeline under pipefail).
one_line() { # TEXT [MAX]
    local v=${1//$'\n'/ }
    v=${v//$'\t'/ }
    printf '%s' "${v:0:${2:-2000}}"
}

die() {
    printf 'error=%s\n' "$(one_line "$*")"
    exit 1
}

# A reply line: key=value, the value on one line.
out() {
    printf '%s=%s\n' "$1" "$(one_line "$2")"
}

now_s() { date +%s; }
now_ms() { date +%s%3N; }
iso_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Seconds with one decimal between two millisecond times.
secs_between() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'
}

in_list() { # WORD LIST: whether WORD is one of the space-separated LIST
    case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

# parse_opts SUB key=value...: set opt_KEY for each key the contract allows for SUB.
parse_opts() {
    local sub=$1 kv key allowed
    shift
    allowed=C_KEYS_$sub
    for kv in "$@"; do
        case "$kv" in *=*) ;; *) die "option '$kv' is not key=value" ;; esac
        key=${kv%%=*}
        in_list "$key" "${!allowed}" || die "unknown option '$key' for $sub"
        printf -v "opt_$key" '%s' "${kv#*=}"
    done
}

# --- validation: nothing a caller passes is ever evaluated -----------------------------------

check_root() {
    case "$1" in
        /*) ;;
        *) die "deploy root '$1' is not absolute" ;;
    esac
    case "$1" in
        *[!A-Za-z0-9/._-]* | */../* | */.. | *//* | */./* | */.) die "deploy root '$1' has unsafe characters" ;;
    esac
    if [ ! -d "$1" ] || [ -L "$1" ]; then
        die "deploy root $1 does not exist on $(hostname) (or is a symlink): run cargo xtask setup-server"
    fi
    if [ ! -d "$1/$C_RELEASES" ] || [ -L "$1/$C_RELEASES" ]; then
        die "$1/$C_RELEASES does not exist on $(hostname) (or is a symlink): run cargo xtask setup-server"
    fi
}

check_release() {
    c_is_release "$1" || die "'$1' is not a release name (expected YYYYMMDDTHHMMSSZ)"
}

check_digits() { # NAME VALUE: a whole number, before any arithmetic sees it
    case "$2" in
        '' | *[!0-9]*) die "$1 must be a whole number, not '$2'" ;;
    esac
    [ "${#2}" -le 12 ] || die "$1 is too large: '$2'"
}

check_word() { # NAME VALUE: a value for logs and metadata (commit, deployer, token)
    case "$2" in
        '' | *[!A-Za-z0-9@._+:/-]*) die "$1 has characters other than letters, digits and @._+:/-: '$2'" ;;
    esac
    [ "${#2}" -le 120 ] || die "$1 is too long"
}

check_token() { # VALUE: a job's token, which names directories: letters, digits, - and _
    case "$1" in
        '' | *[!A-Za-z0-9_-]*) die "token has characters other than letters, digits, - and _: '$1'" ;;
    esac
    [ "${#1}" -le 64 ] || die "token is too long"
}

check_destination() { # NAME: a destination's name (deploy/NAME.env), or empty for none
    case "$1" in *[!a-z0-9-]*) die "destination has characters other than a-z, 0-9 and -: '$1'" ;; esac
    [ "${#1}" -le 32 ] || die "destination is too long"
}

check_one_of() { # NAME VALUE CHOICES
    in_list "$2" "$3" || die "$1 must be one of: $3 (not '$2')"
}

check_units() { # LIST of comma-separated units, each one of the contract's
    local u
    for u in ${1//,/ }; do
        in_list "$u" "$C_UNITS" || die "unknown unit '$u'"
    done
}

check_probes() { # comma-separated http://127.0.0.1:PORT/PATH URLs
    local p
    for p in ${1//,/ }; do
        case "$p" in
            http://127.0.0.1:[0-9]*/*) ;;
            *) die "refusing to probe '$p'" ;;
        esac
        case "$p" in *[!A-Za-z0-9:/._-]*) die "refusing to probe '$p'" ;; esac
    done
}

check_names() { # comma-separated release names
    local n
    for n in ${1//,/ }; do check_release "$n"; done
}

# --- the layout ------------------------------------------------------------------------------

# current_link ROOT: what `current` points to, verbatim ('' when there is no link).
current_link() {
    [ -L "$1/$C_CURRENT" ] || return 0
    readlink "$1/$C_CURRENT" || true
}

# current_status ROOT: ok (a release), missing, dangling (its release is gone), foreign (not a
# link into releases/, or not a link at all).
current_status() {
    local root=$1 link name
    if [ ! -e "$root/$C_CURRENT" ] && [ ! -L "$root/$C_CURRENT" ]; then
        echo missing
        return
    fi
    [ -L "$root/$C_CURRENT" ] || {
        echo foreign
        return
    }
    link=$(current_link "$root")
    name=${link#"$C_RELEASES"/}
    if [ "$link" != "$C_RELEASES/$name" ] || ! c_is_release "$name"; then
        echo foreign
    elif [ -d "$root/$C_RELEASES/$name" ] && [ ! -L "$root/$C_RELEASES/$name" ]; then
        echo ok
    else
        echo dangling
    fi
}

# current_release ROOT: the name of the release current points to when that is a release ('' else).
current_release() {
    local name
    [ "$(current_status "$1")" = ok ] || return 0
    name=$(current_link "$1")
    printf '%s\n' "${name#"$C_RELEASES"/}"
}

state_of() { # RELEASE_DIR (builtins only: list and prune call it for every release)
    local s=""
    if [ -f "$1/$C_STATE_FILE" ] && [ ! -L "$1/$C_STATE_FILE" ]; then
        IFS= read -r -n 32 s <"$1/$C_STATE_FILE" || true
    fi
    if in_list "$s" "$C_STATES"; then echo "$s"; else echo unknown; fi
}

meta() { # FILE KEY: the value of KEY= in FILE, or '-' (builtins only, like state_of)
    local k v="" line
    if [ -f "$1" ] && [ ! -L "$1" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            k=${line%%=*}
            if [ "$k" = "$2" ] && [ "$k" != "$line" ]; then
                v=${line#*=}
                break
            fi
        done <"$1"
    fi
    printf '%s' "${v:--}"
}

# --- files: whole or not at all --------------------------------------------------------------
# Every file the job and the boot check write is written beside, flushed, read back, and renamed
# over the old one; an append is a whole line or nothing. On failure the old file stays, no
# temporary is left, and put_error says what failed (for the caller's warning).

# The cause in a tool's error (`bash: line 3: printf: write error: No space left on device`).
cause_of() { # TEXT
    local v
    v=$(one_line "$1" 300)
    printf '%s' "${v##*: }"
}

# put FILE TEXT: FILE holds TEXT and a newline (an empty TEXT: an empty file).
put() {
    local tmp=$1.tmp.$$ want=$2 back
    [ -z "$want" ] || want+=$'\n'
    put_error=""
    if ! put_error=$({ printf '%s' "$want" >"$tmp"; } 2>&1); then
        put_error="writing $1: $(cause_of "$put_error")"
    elif ! put_error=$(sync -- "$tmp" 2>&1); then
        put_error="flushing $1: $(cause_of "$put_error")"
    elif ! back=$(cat -- "$tmp" 2>/dev/null && printf x) || [ "${back%x}" != "$want" ]; then
        put_error="$1 did not read back as written"
    elif ! put_error=$(mv -fT -- "$tmp" "$1" 2>&1); then
        put_error="renaming into $1: $(cause_of "$put_error")"
    else
        return 0
    fi
    rm -f -- "$tmp"
    return 1
}

# append_line FILE LINE: LINE and a newline at the end of FILE, or FILE as it was.
append_line() {
    local size
    size=$(stat -c %s -- "$1" 2>/dev/null) || size=0
    if put_error=$({ printf '%s\n' "$2" >>"$1"; } 2>&1); then
        return 0
    fi
    put_error="appending to $1: $(cause_of "$put_error")"
    truncate -s "$size" -- "$1" 2>/dev/null || true
    return 1
}

# set_meta FILE KEY VALUE: KEY's line of FILE (key=value lines) set to VALUE, whole or not at all.
set_meta() {
    local line text="" found=""
    [ -f "$1" ] && [ ! -L "$1" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        if [ "${line%%=*}" = "$2" ] && [ "${line%%=*}" != "$line" ]; then
            line="$2=$3"
            found=yes
        fi
        text+="$line"$'\n'
    done <"$1"
    [ -n "$found" ] || text+="$2=$3"$'\n'
    put "$1" "${text%$'\n'}"
}

# TEXT as one word for a file name: spaces to _, anything but letters, digits and ._:+- to _.
word_of() { # TEXT [MAX]
    local v=${1// /_}
    v=${v//[!A-Za-z0-9._:+-]/_}
    v=${v:0:${2:-64}}
    printf '%s' "${v:--}"
}

# A job's result file (what `probe` reports as job.*).
write_result() { # JOBDIR RESULT REASON DURATION REVISION CURRENT
    put "$1/result" "$(
        out result "$2"
        out reason "$3"
        out duration "$4"
        out revision "$5"
        out current "$6"
    )"
}

# install_scripts ROOT RELEASE_DIR: the release's scripts become ROOT/scripts/ (the boot-time
# check runs them), all of them or none: each copied beside and flushed, then all renamed.
install_scripts() {
    local f dest tmps=()
    [ -d "$2/scripts" ] && [ -d "$1/$C_SCRIPTS" ] && [ ! -L "$1/$C_SCRIPTS" ] || return 0
    put_error=""
    for f in "$2"/scripts/*.sh; do
        [ -f "$f" ] || continue
        dest=$1/$C_SCRIPTS/${f##*/}.tmp.$$
        tmps+=("$dest")
        if ! put_error=$(cp -f -- "$f" "$dest" 2>&1 && sync -- "$dest" 2>&1) || ! cmp -s -- "$f" "$dest"; then
            rm -f -- "${tmps[@]}"
            put_error="copying $f to $1/$C_SCRIPTS: $(cause_of "${put_error:-it did not read back as written}")"
            return 1
        fi
    done
    for f in "${tmps[@]}"; do
        mv -fT -- "$f" "${f%.tmp."$$"}" || {
            rm -f -- "${tmps[@]}"
            put_error="renaming $f failed"
            return 1
        }
    done
}

# The release name of the moment SECONDS from now (release names sort as their times do).
name_in() { # SECONDS
    date -u -d "@$(($(now_s) + $1))" +%Y%m%dT%H%M%SZ
}

list_releases() { # ROOT: release=NAME STATE COMMIT REVISION lines, junk=NAME for the rest
    local root=$1 dir name
    for dir in "$root/$C_RELEASES"/*; do
        [ -e "$dir" ] || [ -L "$dir" ] || continue
        name=${dir##*/}
        if c_is_release "$name" && [ -d "$dir" ] && [ ! -L "$dir" ]; then
            printf 'release=%s %s %s %s\n' "$name" "$(state_of "$dir")" \
                "$(meta "$dir/$C_META_FILE" commit)" "$(meta "$dir/$C_META_FILE" alembic_revision)"
        else
            out junk "$name"
        fi
    done
}

# Names of the releases, oldest first.
release_names() {
    list_releases "$1" | sed -n 's/^release=\([^ ]*\) .*/\1/p' | sort
}

# The files of a release its seal covers: regular files of the shipped parts, without the
# virtualenv link and bytecode caches. One line per file: path, size, mtime.
seal_lines() { # RELEASE_DIR
    (cd "$1" && find backend frontend scripts systemd nginx \
        \( -name .venv -o -name __pycache__ -o -name node_modules \) -prune -o \
        -type f -printf '%p\t%s\t%T@\n' 2>/dev/null | LC_ALL=C sort) || true
}

# Whether release NAME succeeded (by its state, or by the result its job left unrecorded in a
# dead lock) and its files are as its seal says (sizes and times). The boot check and the job
# (which release a failed deploy goes back to) share this one notion.
intact() { # ROOT NAME
    local rel=$1/$C_RELEASES/$2
    [ -d "$rel" ] && [ ! -L "$rel" ] || return 1
    [ "$(settled_state "$1" "$2")" = "$C_STATE_SUCCEEDED" ] || return 1
    [ -f "$rel/.seal" ] || return 0
    seal_lines "$rel" | cmp -s - "$rel/.seal"
}

# The newest intact release other than the NAMEs ('' when there is none).
newest_intact() { # ROOT [NAME...]
    local root=$1 name
    shift
    for name in $(release_names "$root" | sort -r); do
        ! in_list "$name" "$*" || continue
        if intact "$root" "$name"; then
            printf '%s' "$name"
            return 0
        fi
    done
}

# --- deploy.log ------------------------------------------------------------------------------

# The longest reason a deploy.log line keeps (a longer one is cut at a word, with "...").
LOG_REASON_MAX=1000

# log_line ROOT START_ISO DEPLOYER COMMIT SCOPE RELEASE RESULT DURATION REVISION [REASON [MARKS]]
# The reason is the last field and runs to the end of the line as it was given (`deploy log`
# reads everything after `reason=`): see log_reason. MARKS: key=value words of the job's plan
# that change what a deploy does (plan_marks), before the reason.
log_line() {
    local line
    line=$(printf '%s deployer=%s commit=%s scope=%s release=%s result=%s duration=%ss alembic=%s' \
        "$2" "${3:--}" "${4:--}" "${5:--}" "${6:--}" "$7" "$8" "${9:--}")
    if [ -n "${11:-}" ]; then
        line="$line ${11}"
    fi
    if [ -n "${10:-}" ]; then
        line="$line reason=$(log_reason "${10}")"
    fi
    line=$(printf '%s' "$line" | LC_ALL=C tr -c '[:print:]' '?')
    append_line "$1/$C_LOG" "$line" || return 1
    # The line as written: the job's result event carries it (the deployer's post- hooks).
    # shellcheck disable=SC2034 # read by deploy-record.sh
    logged_line=$line
    chmod 0640 "$1/$C_LOG" 2>/dev/null || true
}

# log_reason TEXT: TEXT as one line of printable ASCII, its words and underscores as they are:
# control characters (newlines, tabs, escapes) become spaces, other bytes '?', trailing spaces
# go; past LOG_REASON_MAX characters it is cut after the last whole word and ends with "...".
log_reason() {
    local v cut
    v=$(printf '%s' "$1" | LC_ALL=C tr '\001-\037\177' ' ' | LC_ALL=C tr -c ' -~' '?')
    if [ "${#v}" -gt "$LOG_REASON_MAX" ]; then
        cut=${v:0:$((LOG_REASON_MAX - 3))}
        # Unless the cut fell between two words, drop the word it split (a single word that
        # long is cut where it is).
        if [ "${v:$((LOG_REASON_MAX - 3)):1}" != ' ' ] && [ "${cut% *}" != "$cut" ]; then
            cut=${cut% *}
        fi
        while [ "${cut% }" != "$cut" ]; do cut=${cut% }; done
        v="$cut..."
    fi
    while [ "${v% }" != "$v" ]; do v=${v% }; done
    printf '%s' "$v"
}

# --- the database ----------------------------------------------------------------------------

# The migration heads of a release, from its migration scripts (no Python needed).
release_heads() { # BACKEND_DIR
    cat "$1"/alembic/versions/*.py 2>/dev/null | awk '
        /^revision(: *[A-Za-z]+)? *= *["\x27]/ { gsub(/.*= *["\x27]|["\x27].*/, ""); rev[$0] = 1 }
        /^down_revision/ { line = $0; while (match(line, /["\x27][A-Za-z0-9_]+["\x27]/)) {
            down[substr(line, RSTART + 1, RLENGTH - 2)] = 1; line = substr(line, RSTART + RLENGTH) } }
        END { for (r in rev) if (!(r in down)) print r }' | LC_ALL=C sort | paste -sd, - || true
}

# The scope word of a job's deploy.log line: a deploy's scope, else the mode (rollback, restore,
# env-backend, env-frontend).
job_scope() {
    case "${opt_mode:-}" in
        rollback | restore) printf '%s' "$opt_mode" ;;
        env) printf 'env-%s' "${opt_env:-}" ;;
        *) printf '%s' "${opt_scope:-}" ;;
    esac
}

# The env file of KIND (backend|frontend), relative to the root.
env_rel() { # KIND
    case "$1" in
        backend) printf '%s' "$C_ENV_BACKEND" ;;
        frontend) printf '%s' "$C_ENV_FRONTEND" ;;
        *) die "unknown env file '$1'" ;;
    esac
}

# The backups of the env file PATH (plain files named PATH + C_ENV_BACKUP + a release-style
# time), oldest first, one path a line.
env_backups() { # PATH
    local b
    for b in "$1$C_ENV_BACKUP"*; do
        if [ -f "$b" ] && [ ! -L "$b" ] && c_is_release "${b##*"$C_ENV_BACKUP"}"; then
            printf '%s\n' "$b"
        fi
    done | LC_ALL=C sort
}

# Keep the newest C_ENV_BACKUPS_KEPT backups of the env file PATH.
prune_env_backups() { # PATH
    local b
    env_backups "$1" | head -n "-$C_ENV_BACKUPS_KEPT" | while IFS= read -r b; do rm -f -- "$b"; done
}

# Every revision a release's migrations know.
release_revisions() { # BACKEND_DIR
    cat "$1"/alembic/versions/*.py 2>/dev/null |
        sed -n "s/^revision\(: *[A-Za-z]*\)\{0,1\} *= *[\"']\([A-Za-z0-9_]*\)[\"'].*/\2/p" || true
}

# The database's revision as the running API reports it (to loopback), or '' when it does not
# answer.
api_revision() {
    curl -fsS -m 2 "$C_API_PROBE" 2>/dev/null | sed -n 's/.*"revision" *: *"\([A-Za-z0-9_]*\)".*/\1/p' || true
}

# deploytool SUBCOMMAND [ARG] in BACKEND_DIR: its key=value output in $tool_out; fails with its
# error.
deploytool() { # BACKEND_DIR SUBCOMMAND [ARG]
    tool_out=$(cd "$1" && .venv/bin/python -m "$C_DEPLOY_TOOL" "${@:2}" 2>>"${toollog:-/dev/null}" </dev/null) && return 0
    tool_error=$(printf '%s\n' "$tool_out" | sed -n 's/^error=//p' | tail -n 1)
    tool_error=${tool_error:-"python -m $C_DEPLOY_TOOL $2 failed (log: ${toollog:-/dev/null})"}
    return 1
}

# The last value of KEY in the deploy tool's output ($tool_out).
tool_value() { # KEY
    printf '%s\n' "$tool_out" | sed -n "s/^$1=//p" | tail -n 1
}

# PostgreSQL's major version of a version string: 15.10 -> 15, 9.6.24 -> 9.6.
major_of() { # VERSION
    case "$1" in
        [0-9].*) printf '%s' "$1" | cut -d. -f1-2 ;;
        *) printf '%s' "${1%%.*}" ;;
    esac
}

# Whether pg_dump VERSION can dump a server of major SERVER_MAJOR (its own major or older).
major_at_least() { # VERSION SERVER_MAJOR
    [ -n "$1" ] && awk -v a="$(major_of "$1")" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'
}

# --- rollback across migrations --------------------------------------------------------------
# `deploy rollback --migrate-down`: the database goes down to the target release's head with
# the migration scripts of a kept release that knows the database's revision (the one that
# wrote it, or a later one: their downgrades are still on disk).

# The newest kept release whose migrations know REVISION and whose deploy tool can run.
writer_of() { # ROOT REVISION
    local n
    for n in $(release_names "$1" | sort -r); do
        [ -x "$1/$C_RELEASES/$n/backend/.venv/bin/python" ] || continue
        if release_revisions "$1/$C_RELEASES/$n/backend" | grep -qxF -- "$2"; then
            printf '%s' "$n"
            return 0
        fi
    done
}

# What a rollback to TARGET asks of the database at REVISION. Sets down_state: `none` (TARGET's
# migrations know it; down_why says so), `error` (down_why: it cannot go down), or `down`, with
# down_writer (whose scripts take it down) and down_to (TARGET's head, `-`: no migrations).
# shellcheck disable=SC2034 # down_* are the caller's
down_facts() { # ROOT TARGET REVISION
    local heads
    down_state=error down_why="" down_writer="" down_to=""
    if [ "$3" = - ]; then
        down_state=none down_why="the database has no revision: nothing to take down"
        return 0
    fi
    if release_revisions "$1/$C_RELEASES/$2/backend" | grep -qxF -- "$3"; then
        down_state=none down_why="release $2's migrations know revision $3: nothing to take down"
        return 0
    fi
    heads=$(release_heads "$1/$C_RELEASES/$2/backend")
    case "$heads" in
        *,*)
            down_why="release $2 has more than one migration head ($heads): take the database down by hand"
            return 0
            ;;
    esac
    down_to=${heads:--}
    down_writer=$(writer_of "$1" "$3")
    if [ -z "$down_writer" ]; then
        down_why="the database is at revision $3, and no release kept on $(hostname) has that migration (or a virtualenv to run it): its downgrade is gone with the release that wrote it"
        return 0
    fi
    down_state=down
}

# --- snapshots of the database ---------------------------------------------------------------
# The job takes one before a migration (deploy-job.sh, step_snapshot) into C_DB_SNAPSHOTS, named
# after the release that was running on the data and the data's revision; each dump has a
# record beside it (key=value lines: release, revision, size, sha256, created...), and both go
# when that release is pruned.

# The name (without suffix) of the snapshot of RELEASE's data at REVISION; fails (nothing
# printed) when either is not a plain word: both end up in a path.
snapshot_name() { # RELEASE REVISION
    c_is_release "$1" || return 1
    case "$2" in '' | *[!A-Za-z0-9_]*) return 1 ;; esac
    [ "${#2}" -le 64 ] || return 1
    printf '%s-%s' "$1" "$2"
}

# One `dbsnap=RELEASE REVISION SIZE CREATED_EPOCH NAME` line per recorded snapshot whose dump
# is there, oldest first.
list_snapshots() { # ROOT
    local dir=$1/$C_DB_SNAPSHOTS rec name
    [ -d "$dir" ] && [ ! -L "$dir" ] || return 0
    for rec in "$dir"/*"$C_DB_RECORD"; do
        if [ ! -f "$rec" ] || [ -L "$rec" ]; then continue; fi
        name=${rec##*/}
        name=${name%"$C_DB_RECORD"}
        [ -f "$dir/$name$C_DB_DUMP" ] || continue
        out dbsnap "$(meta "$rec" release) $(meta "$rec" revision) $(meta "$rec" size) $(meta "$rec" created_epoch) $name"
    done
}

# Remove the snapshots of release NAME's data (pruned with it); prints how many went.
prune_snapshots() { # ROOT NAME
    local dir=$1/$C_DB_SNAPSHOTS f n=0
    if ! c_is_release "$2" || [ ! -d "$dir" ] || [ -L "$dir" ]; then
        echo 0
        return 0
    fi
    for f in "$dir/$2-"*; do
        case "$f" in *"$C_DB_DUMP" | *"$C_DB_RECORD") ;; *) continue ;; esac
        rm -f -- "$f" || continue
        case "$f" in *"$C_DB_DUMP") n=$((n + 1)) ;; esac
    done
    echo "$n"
}

# unit_states UNIT...: one line per unit, in the order given: NAME ACTIVESTATE NRESTARTS
# UPTIME_MS (how long it has been active, 0 when it is not).
unit_states() {
    local u now
    now=$(($(now_ms) + $(monotonic_offset_ms)))
    for u in "$@"; do
        systemctl show -p ActiveState -p NRestarts -p ActiveEnterTimestampMonotonic "$u" 2>/dev/null |
            awk -v u="$u" -v now="$now" -F= '
                $1 == "ActiveState" { a = $2 }
                $1 == "NRestarts" { n = $2 }
                $1 == "ActiveEnterTimestampMonotonic" { t = $2 }
                END {
                    up = (a == "active" && t > 0) ? now - int(t / 1000) : 0
                    print u, (a == "" ? "unknown" : a), (n == "" ? 0 : n), (up < 0 ? 0 : up)
                }'
    done
}

# The unit and, when it has one, its socket: what the job clears with `systemctl reset-failed`
# before it restarts the unit (one exact sudoers line per unit, contract.rs reset_targets).
reset_targets() { # UNIT
    if in_list "$1" "$C_UNITS_WITH_SOCKET"; then printf '%s %s.socket' "$1" "$1"; else printf '%s' "$1"; fi
}

# The system's monotonic clock (what systemd's ...Monotonic timestamps count) minus the wall
# clock, in milliseconds; worked out once per process. Not /proc/uptime: lxcfs gives an LXC
# container its own uptime there, while systemd's timestamps stay on the kernel's clock.
monotonic_offset_ms() {
    if [ -z "${monotonic_offset:-}" ]; then
        monotonic_offset=$(/usr/bin/python3 -c 'import time; print(int((time.monotonic() - time.time()) * 1000))')
    fi
    printf '%s' "$monotonic_offset"
}

# journal_tail UNIT LINES: the unit's last log lines, through the root-owned reader that
# setup-server installs (the deploy user reads only its own units' logs).
journal_tail() {
    sudo -n "$C_JOURNAL_READER" -n "$2" -o short-iso "$1" 2>&1 </dev/null
}

# --- maintenance mode ------------------------------------------------------------------------
# While C_MAINTENANCE_FLAG exists in the deploy root, nginx answers requests from outside with
# 503 and C_MAINTENANCE_PAGE (nginx/innercontext.conf). The app user writes both, the page
# first, each whole (put); the flag's lines say since, by, message and, when a deploy job
# turned it on, that job's token (the job turns off only what it turned on).

# maint_check_message MESSAGE: what the deployer refuses too (at most C_MAINTENANCE_MESSAGE_MAX
# bytes, no control characters), refused here again.
maint_check_message() { # MESSAGE
    local LC_ALL=C
    [ "${#1}" -le "$C_MAINTENANCE_MESSAGE_MAX" ] ||
        die "the maintenance message is ${#1} bytes, more than $C_MAINTENANCE_MESSAGE_MAX"
    case "$1" in *[[:cntrl:]]*) die "the maintenance message holds a control character" ;; esac
}

# TEXT with & < > " ' as HTML entities (the replacements quoted: bash 5.2 reads a bare & in
# one as the match).
html_escape() { # TEXT
    local v=$1
    v=${v//&/"&amp;"}
    v=${v//</"&lt;"}
    v=${v//>/"&gt;"}
    v=${v//\"/"&quot;"}
    v=${v//\'/"&#39;"}
    printf '%s' "$v"
}

# The maintenance page: a small static HTML document with MESSAGE, escaped (no script, no
# style: the site's Content-Security-Policy allows neither inline).
maint_page() { # MESSAGE
    printf '%s\n' '<!doctype html>' '<html lang="en">' '<head>' '<meta charset="utf-8">' \
        '<meta name="viewport" content="width=device-width, initial-scale=1">' \
        '<title>Down for maintenance</title>' '</head>' '<body>' '<h1>Down for maintenance</h1>'
    [ -z "$1" ] || printf '<p id="message">%s</p>\n' "$(html_escape "$1")"
    printf '%s\n' '</body>' '</html>'
}

# maint_on ROOT MESSAGE BY TOKEN: the page, then the flag (0644: nginx reads the page); put_error
# says what failed.
maint_on() {
    local old rc=0
    old=$(umask)
    umask 022
    put "$1/$C_MAINTENANCE_PAGE" "$(maint_page "$2")" &&
        put "$1/$C_MAINTENANCE_FLAG" "$(printf 'since=%s\nby=%s\nmessage=%s\ntoken=%s' "$(iso_now)" "$3" "$(one_line "$2")" "$4")" ||
        rc=1
    umask "$old"
    return "$rc"
}

# maint_off ROOT [TOKEN]: the flag removed (with TOKEN: only when that job turned it on).
maint_off() {
    [ -e "$1/$C_MAINTENANCE_FLAG" ] || [ -L "$1/$C_MAINTENANCE_FLAG" ] || return 0
    [ -z "${2:-}" ] || [ "$(meta "$1/$C_MAINTENANCE_FLAG" token)" = "$2" ] || return 0
    put_error=$(rm -f -- "$1/$C_MAINTENANCE_FLAG" 2>&1) || return 1
}

# The state as reply lines: maintenance=on|off, and when on, since, by, message, token.
maint_info() { # ROOT
    local f=$1/$C_MAINTENANCE_FLAG k
    if [ ! -e "$f" ] && [ ! -L "$f" ]; then
        out maintenance off
        return 0
    fi
    out maintenance on
    for k in since by message token; do out "maintenance.$k" "$(meta "$f" "$k")"; done
}
