#!/usr/bin/env bash
# Server side of `cargo xtask deploy`. Runs as the app user over the deployer's ssh master
# connection: `bash -c "<this file>" deploy.sh SUBCOMMAND ARGS...`. It is also shipped in every
# release (releases/<name>/scripts/deploy.sh) so the server holds the code that changed it.
#
# Protocol: results are `key=value` lines on stdout; a failure prints one `error=...` line and
# exits non-zero; diagnostics (logs, journal tails) go to stderr. Arguments are validated
# before use, so nothing a caller passes is ever evaluated.
set -euo pipefail
umask 022

UNITS_ALL="innercontext innercontext-node innercontext-pricing-worker"

# Options of fail / activate (see parse_opts).
opt_root="" opt_release="" opt_previous=- opt_token="" opt_result="" opt_started=""
opt_started_epoch=0 opt_deployer="" opt_commit="" opt_scope="" opt_revision="" opt_prune=""
opt_restart="" opt_check="" opt_probe="" opt_timeout=60 opt_stable=4 opt_mark=yes
result_file=${result_file:-}
job_error=""

die() {
    printf 'error=%s\n' "$*"
    exit 1
}

# A deploy root: absolute, no '..', only safe characters (the client checks this too).
check_root() {
    case "$1" in
        /*) ;;
        *) die "deploy root '$1' is not absolute" ;;
    esac
    case "$1" in
        *[!A-Za-z0-9/._-]* | */../* | */.. | *//*) die "deploy root '$1' has unsafe characters" ;;
    esac
    [ -d "$1" ] || die "deploy root $1 does not exist on $(hostname): run cargo xtask setup-server"
    [ -d "$1/releases" ] || die "$1/releases does not exist on $(hostname): run cargo xtask setup-server"
}

# Release names are fixed-width UTC timestamps: 20261128T101530Z.
is_release() {
    case "$1" in
        [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) return 0 ;;
        *) return 1 ;;
    esac
}

check_release() {
    is_release "$1" || die "'$1' is not a release name (expected YYYYMMDDTHHMMSSZ)"
}

check_unit() {
    case " $UNITS_ALL " in
        *" $1 "*) ;;
        *) die "unknown unit '$1'" ;;
    esac
}

current_release() {
    local target
    target=$(readlink "$1/current" 2>/dev/null) || return 0
    basename "$target"
}

state_of() {
    if [ -f "$1/.state" ]; then
        cat "$1/.state"
    else
        echo unknown
    fi
}

# Write a small file atomically (write beside, then rename).
put() {
    printf '%s\n' "$2" >"$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
}

meta() {
    # meta FILE KEY -> value of KEY= in FILE, or '-'
    local v=""
    [ -f "$1" ] && v=$(sed -n "s/^$2=//p" "$1" | head -n 1)
    printf '%s' "${v:--}"
}

# db_revision BACKEND_DIR: the database's alembic revision as that release sees it ('' if none).
db_revision() {
    (cd "$1" && .venv/bin/python -m alembic current 2>/dev/null </dev/null) |
        sed -n 's/^\([A-Za-z0-9_][A-Za-z0-9_]*\)\( (.*)\)\{0,1\}$/\1/p' | sed -n '1p'
}

list_releases() {
    local root=$1 dir name
    for dir in "$root"/releases/*; do
        [ -e "$dir" ] || continue
        name=$(basename "$dir")
        if is_release "$name" && [ -d "$dir" ] && [ ! -L "$dir" ]; then
            printf 'release=%s %s %s %s\n' "$name" "$(state_of "$dir")" \
                "$(meta "$dir/.release" commit)" "$(meta "$dir/.release" alembic_revision)"
        else
            printf 'junk=%s\n' "$name"
        fi
    done
}

lock_info() {
    local lock=$1/.deploy.lock
    if [ -d "$lock" ]; then
        echo "locked=yes"
        if [ -f "$lock/info" ]; then
            sed 's/^/lock./' "$lock/info"
        fi
        printf 'lock.mtime=%s\n' "$(stat -c %Y "$lock")"
    else
        echo "locked=no"
    fi
}

# Read-only view of the deploy root.
cmd_probe() {
    local root=$1
    check_root "$root"
    printf 'now=%s\n' "$(date -u +%s)"
    printf 'host=%s\n' "$(hostname)"
    local cur
    cur=$(current_release "$root")
    printf 'current=%s\n' "$cur"
    if [ -n "$cur" ]; then
        printf 'current.state=%s\n' "$(state_of "$root/releases/$cur")"
        printf 'current.backend_commit=%s\n' "$(meta "$root/releases/$cur/.release" backend_commit)"
        printf 'current.frontend_commit=%s\n' "$(meta "$root/releases/$cur/.release" frontend_commit)"
    fi
    list_releases "$root"
    lock_info "$root"
}

# Everything a deploy needs, checked before any change.
preflight() {
    local root=$1 scope=$2 min_free_mb=$3 me unit f mode owner free_mb
    me=$(id -un)
    { [ -w "$root" ] && [ -w "$root/releases" ]; } ||
        die "$me cannot write to $root/releases on $(hostname): run cargo xtask setup-server"
    for f in "$root/shared/backend/.env" "$root/shared/frontend/.env.production"; do
        [ -f "$f" ] || die "env file $f is missing on $(hostname): create it with cargo xtask setup-server --backend-env/--frontend-env"
        mode=$(stat -c %a "$f")
        owner=$(stat -c %U "$f")
        [ "$mode" = 600 ] || die "env file $f has mode $mode, expected 600: chmod 600 $f (or rerun cargo xtask setup-server)"
        [ "$owner" = "$me" ] || die "env file $f is owned by $owner, expected $me: chown $me $f"
    done
    for unit in $UNITS_ALL; do
        sudo -n -l /usr/bin/systemctl restart "$unit" >/dev/null 2>&1 ||
            die "sudo on $(hostname) does not let $me run 'systemctl restart $unit' without a password: install the sudoers drop-in (cargo xtask setup-server) and check with 'sudo -n -l'"
    done
    command -v curl >/dev/null || die "curl is missing on $(hostname): run cargo xtask setup-server"
    command -v uv >/dev/null || die "uv is missing on $(hostname): run cargo xtask setup-server"
    if [ "$scope" != backend ] || [ ! -L "$root/current" ]; then
        [ -x /usr/local/bin/node ] || die "/usr/local/bin/node is missing on $(hostname): run cargo xtask setup-server"
    fi
    free_mb=$(df -Pm "$root/releases" | awk 'NR==2 {print $4}')
    [ "$free_mb" -ge "$min_free_mb" ] ||
        die "only ${free_mb} MB free under $root/releases on $(hostname), need ${min_free_mb} MB: free space or lower DEPLOY_KEEP"
    printf 'free_mb=%s\n' "$free_mb"
}

# begin ROOT NEW SCOPE MIN_FREE_MB [LOCK_LINE...]: preflight, take the lock, create the release.
cmd_begin() {
    local root=$1 new=$2 scope=$3 min_free=$4 lock newest
    shift 4
    check_root "$root"
    check_release "$new"
    case "$scope" in all | backend | frontend | rollback) ;; *) die "unknown scope '$scope'" ;; esac
    preflight "$root" "$scope" "$min_free"
    lock=$root/.deploy.lock
    if ! mkdir "$lock" 2>/dev/null; then
        echo "conflict=yes"
        cmd_probe "$root"
        exit 3
    fi
    # The lock is ours from here on: record who holds it.
    printf '%s\n' "$@" >"$lock/info.tmp"
    mv -f "$lock/info.tmp" "$lock/info"
    if [ "$scope" != rollback ]; then
        newest=$(list_releases "$root" | sed -n 's/^release=\([^ ]*\) .*/\1/p' | sort | tail -n 1)
        if [ -n "$newest" ] && [ ! "$new" \> "$newest" ]; then
            rm -rf "$lock"
            die "release name $new is not newer than $newest (clock skew or two deploys in one second): check the clocks and retry"
        fi
        mkdir "$root/releases/$new"
        put "$root/releases/$new/.state" preparing
    fi
    cmd_probe "$root"
}

# prepare ROOT NEW SCOPE CURRENT COMMIT DIRTY DEPLOYER: complete the uploaded release.
cmd_prepare() {
    local root=$1 new=$2 scope=$3 cur=$4 commit=$5 dirty=$6 deployer=$7 rel log revision
    check_root "$root"
    check_release "$new"
    rel=$root/releases/$new
    [ -d "$rel" ] || die "release $rel does not exist"
    if [ "$cur" != - ]; then
        check_release "$cur"
        [ -d "$root/releases/$cur" ] || die "current release $cur does not exist"
    fi
    log=$rel/.prepare.log
    : >"$log"

    # The component this deploy does not ship comes from the current release, as hard links.
    case "$scope" in
        backend)
            [ "$cur" != - ] || die "a backend-only deploy needs a current release to take the frontend from: deploy all first"
            cp -al "$root/releases/$cur/frontend" "$rel/frontend"
            ;;
        frontend)
            [ "$cur" != - ] || die "a frontend-only deploy needs a current release to take the backend from: deploy all first"
            cp -al "$root/releases/$cur/backend" "$rel/backend"
            rm -rf "$rel/backend/.venv"
            ;;
    esac

    # Shared env files, linked relative to the release so the tree can move.
    ln -sfn ../../../shared/backend/.env "$rel/backend/.env"
    ln -sfn ../../../shared/frontend/.env.production "$rel/frontend/.env.production"

    # The release's own virtualenv, from the lock file, with a cache kept in shared/.
    mkdir -p "$root/shared/uv-cache"
    if ! (cd "$rel/backend" &&
        UV_CACHE_DIR=$root/shared/uv-cache UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=hardlink \
            UV_SYSTEM_CERTS=1 uv sync --locked --no-dev --no-progress --compile-bytecode \
            --python /usr/bin/python3 </dev/null >>"$log" 2>&1 &&
        .venv/bin/python -m compileall -q innercontext >>"$log" 2>&1); then
        tail -n 30 "$log" >&2
        die "uv sync failed in $rel/backend on $(hostname) (log: $log)"
    fi

    # Nothing in a release is writable by other users, whatever the tools created.
    find "$rel" -perm /022 ! -type l -exec chmod go-w {} +

    if [ "$scope" = all ] || [ "$scope" = backend ]; then
        if ! (cd "$rel/backend" && .venv/bin/python -m alembic upgrade head </dev/null >>"$log" 2>&1); then
            tail -n 30 "$log" >&2
            die "database migration (alembic upgrade head) failed in $rel/backend on $(hostname): check DATABASE_URL in $root/shared/backend/.env and the migration (log: $log)"
        fi
    fi
    # TEMP(web): until the new deployer has this step (with pruning): before the switch, hard-link
    # the release's immutable frontend assets into shared/assets/_app/immutable/ (same relative
    # paths; files already there are kept), where nginx serves them from, so a page opened before
    # the deploy still finds its chunks after it. Never prunes.
    if [ -d "$rel/frontend/build/client/_app/immutable" ]; then
        mkdir -p "$root/shared/assets/_app/immutable"
        cp -al -n "$rel/frontend/build/client/_app/immutable/." "$root/shared/assets/_app/immutable/"
    fi

    revision=$(db_revision "$rel/backend") || revision=""
    # Which commit each half of the release comes from (the carried-over half keeps its own).
    local made=$commit backend_commit frontend_commit
    [ "$dirty" = no ] || made="$commit+dirty"
    backend_commit=$made
    frontend_commit=$made
    case "$scope" in
        backend) frontend_commit=$(meta "$root/releases/$cur/.release" frontend_commit) ;;
        frontend) backend_commit=$(meta "$root/releases/$cur/.release" backend_commit) ;;
    esac
    {
        printf 'release=%s\n' "$new"
        printf 'commit=%s\n' "$commit"
        printf 'backend_commit=%s\n' "$backend_commit"
        printf 'frontend_commit=%s\n' "$frontend_commit"
        printf 'dirty=%s\n' "$dirty"
        printf 'scope=%s\n' "$scope"
        printf 'deployer=%s\n' "$deployer"
        printf 'created=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'alembic_revision=%s\n' "${revision:--}"
    } >"$rel/.release"
    printf 'revision=%s\n' "${revision:--}"

    # Units and the nginx site are installed by setup-server: say when they drifted.
    local unit name
    for unit in "$rel"/systemd/*.service "$rel"/systemd/*.socket; do
        [ -f "$unit" ] || continue
        name=$(basename "$unit")
        cmp -s "/etc/systemd/system/$name" "$unit" ||
            printf 'warn=/etc/systemd/system/%s differs from the release: run cargo xtask setup-server to install it\n' "$name"
    done
    cmp -s /etc/nginx/sites-available/innercontext "$rel/nginx/innercontext.conf" ||
        printf 'warn=/etc/nginx/sites-available/innercontext differs from the release: run cargo xtask setup-server to install it\n'
}

# switch ROOT TARGET: point current at releases/TARGET with one rename; TARGET '-' removes it.
cmd_switch() {
    local root=$1 target=$2 tmp prev
    check_root "$root"
    prev=$(current_release "$root")
    printf 'previous=%s\n' "${prev:--}"
    if [ "$target" = - ]; then
        rm -f "$root/current"
        return
    fi
    check_release "$target"
    [ -d "$root/releases/$target" ] || die "release $target does not exist"
    tmp=$root/.current.tmp.$$
    ln -sfn "releases/$target" "$tmp"
    mv -T "$tmp" "$root/current"
}

# restart UNIT...: only the listed units, through the sudoers drop-in, all at once.
cmd_restart() {
    local unit pids=() failed=""
    for unit in "$@"; do
        check_unit "$unit"
    done
    for unit in "$@"; do
        sudo -n /usr/bin/systemctl restart "$unit" </dev/null &
        pids+=("$!")
    done
    for unit in "$@"; do
        wait "${pids[0]}" || failed="$failed $unit"
        pids=("${pids[@]:1}")
    done
    [ -z "$failed" ] ||
        die "sudo -n systemctl restart failed for${failed} on $(hostname): check the sudoers drop-in (cargo xtask setup-server)"
}

unit_state() {
    systemctl show -p ActiveState --value "$1" 2>/dev/null || echo unknown
}

unit_restarts() {
    systemctl show -p NRestarts --value "$1" 2>/dev/null || echo 0
}

# health TIMEOUT STABLE UNIT... -- URL...: every unit active and every URL answering 2xx,
# STABLE times in a row a quarter second apart, with no unit restarting meanwhile.
cmd_health() {
    local timeout=$1 stable=$2 deadline ok streak=0 unit url bad="" restarts="" r
    shift 2
    local units=() urls=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        check_unit "$1"
        units+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    for url in "$@"; do
        case "$url" in http://127.0.0.1:[0-9]*/*) urls+=("$url") ;; *) die "refusing to probe '$url'" ;; esac
    done
    deadline=$(($(date +%s) + timeout))
    while :; do
        ok=yes
        r=""
        for unit in "${units[@]}"; do
            if [ "$(unit_state "$unit")" != active ]; then
                ok=no
                bad="unit $unit is $(unit_state "$unit")"
            fi
            r="$r $(unit_restarts "$unit")"
        done
        if [ "$ok" = yes ]; then
            for url in "${urls[@]}"; do
                if ! curl -fsS -o /dev/null -m 2 "$url" 2>/dev/null; then
                    ok=no
                    bad="$url does not answer 2xx"
                fi
            done
        fi
        if [ "$ok" = yes ] && { [ "$streak" = 0 ] || [ "$r" = "$restarts" ]; }; then
            streak=$((streak + 1))
            restarts=$r
            if [ "$streak" -ge "$stable" ]; then
                echo "healthy=yes"
                return 0
            fi
        else
            [ "$ok" = yes ] && bad="a unit restarted while being checked"
            streak=0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            break
        fi
        sleep 0.25
    done
    echo "healthy=no"
    for unit in "${units[@]}"; do
        if [ "$(unit_state "$unit")" != active ] || [ "$(unit_restarts "$unit")" != 0 ]; then
            {
                echo "---- systemctl status $unit"
                systemctl status --no-pager -n 0 "$unit" || true
                echo "---- journalctl -u $unit (last 30 lines)"
                journalctl -u "$unit" -n 30 --no-pager -o short-iso 2>&1 || true
            } >&2
        fi
    done
    die "not healthy after ${timeout}s: $bad"
}

release_lock() {
    local root=$1 token=$2 lock=$1/.deploy.lock held
    [ -d "$lock" ] || return 0
    held=$(meta "$lock/info" token)
    if [ "$token" = --force ] || [ "$held" = "$token" ]; then
        rm -rf "$lock"
        echo "unlocked=yes"
    else
        printf 'warn=the lock is held by someone else now (token %s), left in place\n' "$held"
    fi
}

# Options of finish / fail / activate come as key=value words; only these keys exist.
parse_opts() {
    local kv key
    for kv in "$@"; do
        key=${kv%%=*}
        case "$key" in
            root | release | previous | token | result | started | started_epoch | deployer | commit | \
                scope | revision | prune | restart | check | probe | timeout | stable | mark)
                printf -v "opt_$key" '%s' "${kv#*=}"
                ;;
            *) die "unknown option '$key'" ;;
        esac
    done
}

# The one line per deploy in deploy.log: time, who, commit, scope, release, result, duration, revision.
log_entry() {
    local duration
    duration=$(awk -v s="${opt_started_epoch:-0}" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}')
    printf '%s deployer=%s commit=%s scope=%s release=%s result=%s duration=%ss alembic=%s\n' \
        "${opt_started:--}" "${opt_deployer:--}" "${opt_commit:--}" "${opt_scope:--}" \
        "${opt_release:--}" "$1" "$duration" "${opt_revision:--}" | tr -c '[:print:]\n' '_' >>"$opt_root/deploy.log"
}

mark() {
    if [ "${opt_mark:-yes}" = yes ] && [ -d "$opt_root/releases/$opt_release" ]; then
        put "$opt_root/releases/$opt_release/.state" "$1"
    fi
}

prune() {
    local old cur
    cur=$(current_release "$opt_root")
    for old in ${opt_prune//,/ }; do
        check_release "$old"
        if [ "$old" = "$cur" ] || [ "$old" = "$opt_release" ]; then
            continue
        fi
        rm -rf "${opt_root:?}/releases/$old"
        printf '    pruned %s\n' "$old"
    done
}

# fail key=value...: a deploy that never switched: mark the release failed, log, unlock.
cmd_fail() {
    parse_opts "$@"
    check_root "$opt_root"
    check_release "$opt_release"
    # On a full disk the partial upload goes first, so the state can be written.
    if ! mark failed 2>/dev/null; then
        rm -rf "${opt_root:?}/releases/$opt_release/backend" "${opt_root:?}/releases/$opt_release/frontend"
        mark failed || true
    fi
    log_entry "${opt_result:-failed}"
    release_lock "$opt_root" "$opt_token"
}

# Run one step of the activation in a subshell, print its line, keep its error.
job_step() {
    local name=$1 start out status=0
    shift
    start=$(date +%s.%N)
    out=$("$@" 2>&1) || status=$?
    printf '    %-44s %s (%ss)\n' "$name" "$([ "$status" = 0 ] && echo ok || echo FAILED)" \
        "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}')"
    printf '%s\n' "$out" | grep -v -e '^previous=' -e '^healthy=' -e '^error=' -e '^$' || true
    job_error=$(printf '%s\n' "$out" | sed -n 's/^error=//p' | tail -n 1)
    return "$status"
}

# The activation, detached from the client: switch, restart, health, then either finish
# (succeeded, prune, log, unlock) or put the previous release back. It runs to its end even
# if the client is killed or the connection drops, so the server is never left half-switched.
# shellcheck disable=SC2086 # unit lists are validated words, split on purpose
activate_job() {
    parse_opts "$@"
    local units check probes result error="" prev_label
    units=${opt_restart//,/ }
    check=${opt_check//,/ }
    probes=${opt_probe//,/ }
    if job_step "switch current -> $opt_release" cmd_switch "$opt_root" "$opt_release" &&
        job_step "restart ${units// /, }" cmd_restart $units &&
        job_step "health checks" cmd_health "$opt_timeout" "$opt_stable" $check -- $probes; then
        mark succeeded
        prune
        log_entry success
        release_lock "$opt_root" "$opt_token" >/dev/null
        printf 'result=success\n' >"$result_file"
        return 0
    fi
    error=$job_error
    prev_label=${opt_previous}
    if [ "$opt_previous" = - ]; then
        prev_label="no release"
        job_step "remove current (first deploy)" cmd_switch "$opt_root" - || true
        result=failed
    elif job_step "switch current -> $prev_label" cmd_switch "$opt_root" "$opt_previous" &&
        job_step "restart ${UNITS_ALL// /, }" cmd_restart $UNITS_ALL &&
        job_step "health checks of $prev_label" cmd_health "$opt_timeout" "$opt_stable" $check -- $probes; then
        result=rolled-back
    else
        result=rollback-failed
    fi
    mark failed
    log_entry "$result"
    release_lock "$opt_root" "$opt_token" >/dev/null
    printf 'result=%s\nerror=%s\n' "$result" "${error:-unknown}" >"$result_file"
    return 1
}

# activate key=value...: start the activation job and follow its output until it ends.
cmd_activate() {
    parse_opts "$@"
    check_root "$opt_root"
    check_release "$opt_release"
    [ "$opt_previous" = - ] || check_release "$opt_previous"
    # Only the holder of the lock may switch: a client killed and unlocked by someone else
    # must not activate late.
    [ "$(meta "$opt_root/.deploy.lock/info" token)" = "$opt_token" ] ||
        die "this deploy no longer holds $opt_root/.deploy.lock on $(hostname): nothing was switched"
    local dir=$opt_root/releases/$opt_release log result offset pid
    log=$dir/.activate.log
    result=$dir/.activate.result
    rm -f "$result"
    touch "$log"
    offset=$(($(stat -c %s "$log") + 1))
    result_file=$result setsid nohup bash -c "$BASH_EXECUTION_STRING" deploy.sh activate-job "$@" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    tail -c "+$offset" -s 0.1 -f --pid="$pid" "$log" >&2 || true
    wait "$pid" || true
    [ -f "$result" ] || die "the activation on $(hostname) ended without a result (see $log)"
    cat "$result"
    rm -f "$result"
}

# unlock ROOT TOKEN|--force
cmd_unlock() {
    check_root "$1"
    release_lock "$1" "$2"
}

# sizes ROOT NAME...: disk use of each release (kB, counted on its own).
cmd_sizes() {
    local root=$1 name
    shift
    check_root "$root"
    for name in "$@"; do
        check_release "$name"
        printf 'size=%s %s\n' "$name" "$(du -sk "$root/releases/$name" | cut -f1)"
    done
}

# dbcheck ROOT TARGET: the database revision, and whether TARGET's migrations know it.
cmd_dbcheck() {
    local root=$1 target=$2 cur rev known=yes
    check_root "$root"
    check_release "$target"
    cur=$(current_release "$root")
    [ -n "$cur" ] || die "no current release"
    rev=$(db_revision "$root/current/backend") ||
        die "cannot read the database revision with $root/current/backend (check DATABASE_URL)"
    # A release knows a revision when one of its migration scripts declares it.
    if [ -n "$rev" ] && ! grep -Eqs "^revision(: str)? = ['\"]${rev}['\"]" \
        "$root/releases/$target/backend/alembic/versions/"*.py; then
        known=no
    fi
    printf 'db_revision=%s\n' "${rev:--}"
    printf 'target_knows=%s\n' "$known"
}

# status ROOT: probe plus units, disk and database revision.
cmd_status() {
    local root=$1 unit rev
    cmd_probe "$root"
    for unit in $UNITS_ALL; do
        printf 'unit=%s %s %s\n' "$unit" "$(unit_state "$unit")" "$(unit_restarts "$unit")"
    done
    printf 'disk=%s\n' "$(df -Ph "$root" | awk 'NR==2 {print $4 " free of " $2 " (" $5 " used)"}')"
    rev=""
    if [ -x "$root/current/backend/.venv/bin/python" ]; then
        rev=$(db_revision "$root/current/backend") || rev="unreadable"
    fi
    printf 'db_revision=%s\n' "${rev:--}"
}

main() {
    [ $# -ge 1 ] || die "usage: deploy.sh SUBCOMMAND ARGS..."
    local sub=$1
    shift
    case "$sub" in
        probe) cmd_probe "$@" ;;
        begin) cmd_begin "$@" ;;
        prepare) cmd_prepare "$@" ;;
        switch) cmd_switch "$@" ;;
        restart) cmd_restart "$@" ;;
        health) cmd_health "$@" ;;
        fail) cmd_fail "$@" ;;
        activate) cmd_activate "$@" ;;
        activate-job)
            result_file=${result_file:?}
            activate_job "$@"
            ;;
        unlock) cmd_unlock "$@" ;;
        sizes) cmd_sizes "$@" ;;
        dbcheck) cmd_dbcheck "$@" ;;
        status) cmd_status "$@" ;;
        *) die "unknown subcommand '$sub'" ;;
    esac
}

main "$@"
