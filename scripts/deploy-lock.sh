# shellcheck shell=bash
# The deploy lock (see deploy.sh): a directory `.deploy.lock` under the deploy root, holding
# `info` (who, when, what, its token, the boot it was taken in), `job.lock` (flocked by the job
# for its whole life), `plan`, `phase` (the step or wait the job is at), `pending`, `hb` (the
# client's last word), `msg/` (messages the client sent) and `fifo` (wakes the job up).
#
# It is built whole beside (`.deploy.lock.new.TOKEN`), its job.lock already flocked, and renamed
# into place under a flock on the guard file: a visible lock has a live holder until that holder
# is gone, so "no process holds its flock" (or "the server booted since it was taken") proves it
# dead, with no window. The next deploy or rollback takes a dead lock over (`take_lock`; what the
# dead job left is recorded by deploy-record.sh). A job that cannot record its result (a full
# disk) keeps it in the name of `pending`, renamed to `unrecorded,result=R,...` (a rename needs
# no space), and exits keeping the lock: whoever takes the lock next records it, and the boot
# check counts it meanwhile (`settled_state`).

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-lib.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-lib.sh"
fi

lock_dir() { printf '%s/%s' "$1" "$C_LOCK"; }

guard_on() { # ROOT: hold the guard (fd 7) until guard_off
    exec 7>>"$1/$C_GUARD"
    flock -w 30 7 || die "could not take $1/$C_GUARD within 30s"
}
guard_off() { flock -u 7 2>/dev/null || true; }

# This boot of the server ('-' where it cannot be read, as in the boot check's sandbox).
boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || printf -- '-'; }

# Whether the lock was taken in an earlier boot of the server.
lock_rebooted() { # LOCKDIR
    local b now
    b=$(meta "$1/info" boot_id)
    now=$(boot_id)
    [ "$b" != - ] && [ "$now" != - ] && [ "$b" != "$now" ]
}

# Whether the job holding the lock is alive: it holds job.lock's flock (exclusively) for its
# whole life, from before the lock is visible; a shared try fails only then (and two lookers
# never mistake each other for the job).
job_alive() { # LOCKDIR
    [ -f "$1/job.lock" ] || return 1
    ! lock_rebooted "$1" || return 1
    ! flock -n -s "$1/job.lock" true 2>/dev/null
}

# Whether the job holding the lock (alive: its flock is held) has died, and a process it
# started (a step: a migration is not cut short) holds the flock.
job_orphaned() { # ROOT LOCKDIR
    local token pid
    token=$(meta "$2/info" token)
    case "$token" in '' | *[!A-Za-z0-9_-]*) return 1 ;; esac
    pid=$(head -c 16 "$1/$C_JOBS/$token/pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    ! kill -0 "$pid" 2>/dev/null
}

# The marker a job left when it could not record its result, if any.
unrecorded_marker() { # LOCKDIR
    local f
    for f in "$1"/unrecorded,*; do
        if [ -e "$f" ]; then
            printf '%s' "$f"
            return 0
        fi
    done
    return 1
}

# A field of the marker's name (`reason` and `why` with spaces again), '-' when absent.
marker_field() { # MARKER KEY
    local part v=- IFS=,
    # Split at commas; the values are words (see word_of): nothing to glob.
    for part in ${1##*/}; do
        if [ "${part%%=*}" = "$2" ]; then v=${part#*=}; fi
    done
    case "$2" in reason | why) v=${v//_/ } ;; esac
    printf '%s' "$v"
}

# mark_unrecorded RESULT DURATION REVISION WHY REASON: the job could not record its result:
# keep it in the lock, in the name of `pending` (the lock stays; its flock goes with the job).
mark_unrecorded() {
    mv -T -- "$lock/pending" "$lock/unrecorded,result=$(word_of "$1" 20),duration=$(word_of "$2" 12),alembic=$(word_of "$3" 40),why=$(word_of "$4" 50),reason=$(word_of "$5" 80)"
}

# The state of release NAME, counting a result its job left unrecorded in a dead lock.
settled_state() { # ROOT NAME
    local s lock marker
    s=$(state_of "$1/$C_RELEASES/$2")
    lock=$(lock_dir "$1")
    if [ "$s" = "$C_STATE_PREPARING" ] && [ "$(meta "$lock/info" release)" = "$2" ] &&
        marker=$(unrecorded_marker "$lock") && ! job_alive "$lock"; then
        if [ "$(marker_field "$marker" result)" = success ]; then
            s=$C_STATE_SUCCEEDED
        else
            s=$C_STATE_FAILED
        fi
    fi
    printf '%s\n' "$s"
}

lock_info() { # ROOT: lock.* lines
    local lock marker
    lock=$(lock_dir "$1")
    if [ -d "$lock" ]; then
        out locked yes
        if [ -f "$lock/info" ]; then
            sed -n 's/^\([a-z_]*\)=\(.*\)$/lock.\1=\2/p' "$lock/info"
        fi
        out lock.mtime "$(stat -c %Y "$lock")"
        if job_alive "$lock"; then
            out lock.alive yes
            # Its job's own process gone: a step it started holds the lock (see job_orphaned).
            if job_orphaned "$1" "$lock"; then out lock.orphaned yes; fi
        else
            out lock.alive no
        fi
        if lock_rebooted "$lock"; then out lock.rebooted yes; fi
        if [ -f "$lock/phase" ]; then out lock.phase "$(head -c 64 "$lock/phase")"; fi
        if marker=$(unrecorded_marker "$lock"); then
            out lock.unrecorded "$(marker_field "$marker" result)"
            out lock.unrecorded_why "$(marker_field "$marker" why)"
        fi
    else
        out locked no
    fi
}

# build_lock DIR INFO: the lock, whole, in DIR (not visible yet): job.lock flocked on fd 8 (the
# job inherits it), info, pending, hb, msg/, fifo. Returns 1 with put_error on failure.
build_lock() {
    mkdir -- "$1" 2>/dev/null || {
        put_error="cannot make $1"
        return 1
    }
    if ! { exec 8>"$1/job.lock"; } 2>/dev/null || ! flock -n -x 8; then
        put_error="cannot flock $1/job.lock"
        return 1
    fi
    put "$1/info" "$2" || return 1
    if ! { : >"$1/pending" && : >"$1/hb" && mkdir "$1/msg" && mkfifo -m 0600 "$1/fifo"; } 2>/dev/null; then
        put_error="cannot fill $1"
        return 1
    fi
}

# take_lock ROOT TOKEN INFO: take the lock for TOKEN, holding its flock on fd 8; a dead lock is
# moved aside to .deploy.lock.dead.TOKEN (settle_dead records it). Returns 1 when a live job
# holds it (conflict), 2 when the lock could not be made (put_error says why).
take_lock() {
    local root=$1 lock new
    lock=$(lock_dir "$root")
    new=$lock.new.$2
    guard_on "$root"
    # Half-built locks of callers that died while they held the guard.
    rm -rf -- "$lock".new.*
    if ! build_lock "$new" "$3"; then
        exec 8>&-
        rm -rf -- "$new"
        guard_off
        return 2
    fi
    if [ -e "$lock" ] || [ -L "$lock" ]; then
        if job_alive "$lock"; then
            exec 8>&-
            rm -rf -- "$new"
            guard_off
            return 1
        fi
        mv -T -- "$lock" "$lock.dead.$2"
    fi
    # Under the guard nothing else made the lock meanwhile: this rename cannot replace one.
    mv -T -- "$new" "$lock"
    guard_off
}

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
