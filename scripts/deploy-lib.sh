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

# Write a small file atomically (beside, then rename), flushed to disk.
put() {
    printf '%s\n' "$2" >"$1.tmp.$$"
    sync "$1.tmp.$$" 2>/dev/null || true
    mv -f "$1.tmp.$$" "$1"
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

# --- the lock --------------------------------------------------------------------------------
# A directory made with mkdir (atomic), holding `info` (who, when, what; written before the
# guard is released, so a visible lock always has a token), `plan`, `job.pid`, `hb` (the
# client's last word), `msg/` (messages the client sent) and `fifo` (wakes the job up).
# Taking, releasing and removing it happen under a flock on the guard file.

lock_dir() { printf '%s/%s' "$1" "$C_LOCK"; }

guard_on() { # ROOT: hold the guard (fd 7) until guard_off
    exec 7>>"$1/$C_GUARD"
    flock -w 30 7 || die "could not take $1/$C_GUARD within 30s"
}
guard_off() { flock -u 7 2>/dev/null || true; }

# Whether the job holding the lock is alive (it holds a flock on job.lock for its whole life).
job_alive() { # LOCKDIR
    [ -f "$1/job.lock" ] || return 1
    ! flock -n "$1/job.lock" true 2>/dev/null
}

lock_info() { # ROOT: lock.* lines
    local lock
    lock=$(lock_dir "$1")
    if [ -d "$lock" ]; then
        out locked yes
        if [ -f "$lock/info" ]; then
            sed -n 's/^\([a-z_]*\)=\(.*\)$/lock.\1=\2/p' "$lock/info"
        fi
        out lock.mtime "$(stat -c %Y "$lock")"
        if job_alive "$lock"; then out lock.alive yes; else out lock.alive no; fi
        if [ -f "$lock/phase" ]; then out lock.phase "$(head -c 64 "$lock/phase")"; fi
    else
        out locked no
    fi
}

# Remove the lock if it still holds TOKEN (under the guard). Prints unlocked=yes|no.
# release_lock ROOT TOKEN: remove the lock if TOKEN still holds it (under the guard); says
# which in lock_released (yes|no) and as an `unlocked` reply.
release_lock() {
    local lock held
    lock=$(lock_dir "$1")
    guard_on "$1"
    held=$(meta "$lock/info" token)
    lock_released=no
    if [ -d "$lock" ] && [ "$held" = "$2" ]; then
        mv -T "$lock" "$lock.gone.$$" && rm -rf "$lock.gone.$$"
        # shellcheck disable=SC2034 # read by the caller
        lock_released=yes
        guard_off
        out unlocked yes
    else
        guard_off
        out unlocked no
    fi
}

# --- deploy.log ------------------------------------------------------------------------------

# The longest reason a deploy.log line keeps (a longer one is cut at a word, with "...").
LOG_REASON_MAX=1000

# log_line ROOT START_ISO DEPLOYER COMMIT SCOPE RELEASE RESULT DURATION REVISION [REASON]
# The reason is the last field and runs to the end of the line as it was given (`deploy log`
# reads everything after `reason=`): see log_reason.
log_line() {
    local line
    line=$(printf '%s deployer=%s commit=%s scope=%s release=%s result=%s duration=%ss alembic=%s' \
        "$2" "${3:--}" "${4:--}" "${5:--}" "${6:--}" "$7" "$8" "${9:--}")
    if [ -n "${10:-}" ]; then
        line="$line reason=$(log_reason "${10}")"
    fi
    printf '%s\n' "$line" | LC_ALL=C tr -c '[:print:]\n' '?' >>"$1/$C_LOG"
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
