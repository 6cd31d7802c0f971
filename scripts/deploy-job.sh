# shellcheck shell=bash
# The server-side job of a deploy or rollback (started by `deploy.sh run`, see deploy.sh).
#
# It owns the server's state from the moment the lock is taken until it is released: it seeds
# the new release from current, waits for the upload, prepares the release, waits for the
# client's local checks, migrates, switches `current`, restarts, checks health, restores the
# previous release on failure, and always records the outcome (state, deploy.log, prune) and
# releases the lock. It runs detached from the ssh session (its own session, stdin closed), so
# the client may vanish at any moment:
#   - before the migration starts, a client that says `abort` or falls silent for
#     C_CLIENT_GRACE_SECS stops the job at the next wait: nothing is switched;
#   - once the migration has started, the job finishes the whole activation by itself
#     (fleets: a host that is healthy waits for the client's verdict and goes back without one).
# Every step runs as a child process, so `set -e` holds inside it, and its line tells how long
# it took. Events (see emit) go to jobs/TOKEN/events, which `follow` streams to the client.

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-lib.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-lib.sh"
fi

# --- events and job variables ----------------------------------------------------------------

# emit KIND FIELD...: one event line, tab-separated, prefixed with the server's time in ms.
emit() {
    local line f
    line=$(now_ms)
    for f in "$@"; do
        line+=$'\t'"$(one_line "$f")"
    done
    printf '%s\n' "$line" >>"$events"
}

# Lines of a file as detail events (tool output, journal tails).
emit_details() { # FILE [MAX_LINES]
    local l
    [ -f "$1" ] || return 0
    tail -n "${2:-30}" "$1" | while IFS= read -r l; do emit detail "$l"; done
}

# Steps run as child processes: what they learn goes through files in the job directory.
setv() { printf '%s' "$2" >"$jobdir/v.$1"; }
getv() { [ -f "$jobdir/v.$1" ] && cat "$jobdir/v.$1" || printf '%s' "${2:-}"; }

# A step's one-line reason for failing, then exit (inside a step).
fail() {
    printf '%s' "$*" >"$jobdir/step.error"
    exit 1
}

# run_step NAME LABEL FUNCTION ARGS...: the step as a child process (so `set -e` holds in it),
# with a start event (its label: what the deployer prints) and an end event; returns its status.
run_step() {
    local name=$1 label=$2 start status=0 pid
    shift 2
    rm -f "$jobdir/step.error"
    printf '%s' "$name" >"$lock/phase"
    if ! test_pause "$name"; then
        finish_with "$stop_result" "$stop_reason; stopped before $name; current was not touched"
        exit 0
    fi
    start=$(now_ms)
    emit step "$name" start "$label"
    "$@" &
    pid=$!
    wait "$pid" || status=$?
    if [ "$status" = 0 ]; then
        emit step "$name" ok "$(secs_between "$start" "$(now_ms)")"
    else
        step_error=$(cat "$jobdir/step.error" 2>/dev/null || true)
        step_error=${step_error:-"$label failed (exit $status); see $jobdir/tool.log"}
        emit step "$name" failed "$(secs_between "$start" "$(now_ms)")" "$step_error"
    fi
    return "$status"
}

# --- waiting for the client ------------------------------------------------------------------

client_gone() {
    local last
    last=$(stat -c %Y "$lock/hb" 2>/dev/null || echo 0)
    [ $(($(now_s) - last)) -ge "$C_CLIENT_GRACE_SECS" ]
}

# Whether the client asked the job to stop or went silent ($stop_result and $stop_reason say
# which).
stop_asked() {
    if [ -e "$lock/msg/abort" ]; then
        stop_reason=$(head -c 300 "$lock/msg/abort")
        stop_result=${stop_reason%%:*}
        in_list "$stop_result" "interrupted failed refused" || stop_result=interrupted
        stop_reason=${stop_reason#*: }
        return 0
    fi
    if client_gone; then
        stop_result=interrupted
        stop_reason="the deployer fell silent for ${C_CLIENT_GRACE_SECS}s (killed, or its connection lost)"
        return 0
    fi
    return 1
}

# await_msg NAME...: returns 0 when one of the messages arrived (its name in $got); 1 when the
# client aborted or went silent (see stop_asked).
await_msg() {
    local m _
    while :; do
        for m in "$@"; do
            if [ -e "$lock/msg/$m" ]; then
                got=$m
                return 0
            fi
        done
        ! stop_asked || return 1
        read -r -t 1 -u 6 _ || true
    done
}

# Test hook (plan key pause_at, the deployer's INNERCONTEXT_TEST_PAUSE_AT): when step STEP is
# about to start, write $lock/paused (holding the step) and wait while it exists. Before the
# checks passed (seed, prepare) an abort or a silent client still stops the job (returns 1).
test_pause() { # STEP
    local _
    [ -n "$opt_pause_at" ] && [ "$opt_pause_at" = "$1" ] || return 0
    printf '%s\n' "$1" >"$lock/paused"
    emit info "paused before $1 (test hook): remove $lock/paused to go on"
    while [ -e "$lock/paused" ]; do
        case "$1" in
            seed | prepare) ! stop_asked || return 1 ;;
        esac
        read -r -t 1 -u 6 _ || true
    done
}

# --- the release -----------------------------------------------------------------------------

# The files of a release the seal covers: regular files of the shipped parts, without the
# virtualenv link and bytecode caches. One line per file: path, size, mtime.
seal_lines() { # RELEASE_DIR
    (cd "$1" && find backend frontend scripts systemd nginx \
        \( -name .venv -o -name __pycache__ -o -name node_modules \) -prune -o \
        -type f -printf '%p\t%s\t%T@\n' 2>/dev/null | LC_ALL=C sort) || true
}

step_seed() {
    local cur status part drift n=0 f
    umask 022
    mkdir "$rel" || fail "release $opt_release already exists on $(hostname)"
    put "$rel/$C_STATE_FILE" "$C_STATE_PREPARING"
    write_meta -
    status=$(current_status "$root")
    if [ "$status" != ok ]; then
        emit note seed none "$status"
        return 0
    fi
    cur=$(current_release "$root")
    for part in backend frontend scripts systemd nginx; do
        if [ -d "$root/$C_RELEASES/$cur/$part" ]; then
            cp -al "$root/$C_RELEASES/$cur/$part" "$rel/$part"
        fi
    done
    # The virtualenv link and the env links are made again by prepare.
    rm -rf "$rel/backend/.venv"
    remove_env_links
    # Files of current that no longer match what current was made from (edited on the server)
    # are not carried over: the client uploads them again.
    if [ -f "$root/$C_RELEASES/$cur/.seal" ]; then
        drift=$(LC_ALL=C comm -3 "$root/$C_RELEASES/$cur/.seal" <(seal_lines "$root/$C_RELEASES/$cur") |
            sed 's/^\t//' | cut -f1 | LC_ALL=C sort -u)
        while IFS= read -r f; do
            [ -n "$f" ] || continue
            f=${f#./}
            rm -f "$rel/$f"
            n=$((n + 1))
            if [ "$n" -le 50 ]; then emit note drift "$f"; fi
        done <<<"$drift"
        emit note seed "$cur" verified "$n"
    else
        emit note seed "$cur" unverified
    fi
}

remove_env_links() {
    local pair link
    for pair in $C_ENV_LINKS; do
        link=${pair%%:*}
        if [ -L "$rel/$link" ]; then rm -f "$rel/$link"; fi
    done
}

# The parts of a release this deploy ships (the others are carried over from current).
shipped_parts() {
    case "$opt_scope" in
        all) echo "backend frontend scripts systemd nginx" ;;
        backend) echo "backend scripts systemd nginx" ;;
        frontend) echo "frontend scripts systemd nginx" ;;
    esac
}

# Make the shipped parts exactly the manifest: remove what the upload no longer has, and make
# sure everything it has arrived.
reconcile() {
    local manifest=$lock/msg/manifest parts have want bad missing extra
    [ -f "$manifest" ] || fail "the deployer sent no file list"
    bad=$(awk '!/^(backend|frontend|scripts|systemd|nginx)\// || /(^|\/)\.\.?(\/|$)/ || /[[:cntrl:]]/ { print; exit }' "$manifest")
    [ -z "$bad" ] || fail "refusing the file list: '$bad' is not a path inside the release"
    parts=$(shipped_parts)
    want=$jobdir/want
    have=$jobdir/have
    LC_ALL=C sort -u "$manifest" >"$want"
    # shellcheck disable=SC2086 # parts are fixed words
    (cd "$rel" && find $parts \( -name .venv -o -name __pycache__ \) -prune -o \( -type f -o -type l \) -print 2>/dev/null) |
        grep -v -x -F -e backend/.env -e frontend/.env.production | LC_ALL=C sort >"$have" || true
    extra=$(LC_ALL=C comm -23 "$have" "$want")
    if [ -n "$extra" ]; then
        (cd "$rel" && printf '%s\n' "$extra" | while IFS= read -r f; do rm -f -- "$f"; done)
        emit note removed "$(printf '%s\n' "$extra" | grep -c .)"
    fi
    missing=$(LC_ALL=C comm -13 "$have" "$want" | sed -n '1,3p')
    [ -z "$missing" ] || fail "the upload is incomplete: $(printf '%s' "$missing" | tr '\n' ' ')missing in $rel"
}

# The release's virtualenv: shared/venvs/KEY, KEY from uv.lock, pyproject.toml, Python and uv,
# built once with uv (from the shared cache, hard-linked) and linked from backend/.venv.
link_venv() {
    local key venv py uvv
    py=$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')
    uvv=$(uv --version)
    key=$( (cat "$rel/backend/uv.lock" "$rel/backend/pyproject.toml" && printf '%s\n%s\n' "$py" "$uvv") | sha256sum | cut -c1-16)
    venv=$root/$C_VENVS/$key
    mkdir -p "$root/$C_VENVS" "$root/$C_UV_CACHE"
    if [ ! -f "$venv/.complete" ]; then
        rm -rf "$venv"
        if ! (cd "$rel/backend" &&
            UV_PROJECT_ENVIRONMENT=$venv UV_CACHE_DIR=$root/$C_UV_CACHE UV_PYTHON_DOWNLOADS=never \
                UV_LINK_MODE=hardlink UV_SYSTEM_CERTS=1 uv sync --locked --no-dev --no-install-project \
                --no-progress --compile-bytecode --python /usr/bin/python3 </dev/null >>"$toollog" 2>&1); then
            rm -rf "$venv"
            emit_details "$toollog" 20
            fail "uv sync failed in $rel/backend on $(hostname) (log: $toollog)"
        fi
        : >"$venv/.complete"
        emit note venv "$key" built
    else
        emit note venv "$key" reused
    fi
    ln -sfn "../../../$C_VENVS/$key" "$rel/backend/.venv"
    setv venv "$key"
}

# Hard-link the release's immutable frontend assets into shared/assets (nginx serves them from
# there, so pages open before a deploy keep loading their chunks), and record which they are.
share_assets() {
    local src=$rel/$C_IMMUTABLE dest=$root/$C_ASSETS/_app/immutable
    [ -d "$src" ] || return 0
    mkdir -p "$dest" "$root/$C_ASSETS/.releases"
    chmod 0755 "$root/$C_ASSETS" "$root/$C_ASSETS/_app" "$dest"
    cp -aln "$src/." "$dest/" || true
    (cd "$src" && find . -type f -printf '%P\n' | LC_ALL=C sort) >"$root/$C_ASSETS/.releases/$opt_release"
    [ -z "$(cd "$src" && find . -type f -printf '%P\n' | while IFS= read -r f; do [ -e "$dest/$f" ] || echo x; done)" ] ||
        fail "could not share the frontend assets in $dest"
}

step_prepare() {
    local pair link target unit name revision
    umask 022
    reconcile
    for pair in $C_ENV_LINKS; do
        link=${pair%%:*}
        target=${pair#*:}
        [ -d "$rel/${link%/*}" ] || continue
        ln -sfn "$target" "$rel/$link"
    done
    link_venv
    (cd "$rel/backend" && .venv/bin/python -m compileall -q "$C_BACKEND_PACKAGE" >>"$toollog" 2>&1) ||
        fail "byte-compiling the backend failed in $rel/backend (log: $toollog)"
    # Nothing in a release is writable by other users, whatever the tools created.
    find "$rel" -perm /022 ! -type l -exec chmod go-w {} +
    share_assets
    write_meta "$(getv venv -)"
    # Units and the nginx site are installed by setup-server: say when they drifted.
    for unit in "$rel"/systemd/*.service "$rel"/systemd/*.socket; do
        [ -f "$unit" ] || continue
        name=${unit##*/}
        cmp -s "/etc/systemd/system/$name" "$unit" ||
            emit warn "/etc/systemd/system/$name differs from the release: run cargo xtask setup-server to install it"
    done
    if [ -f "$rel/$C_NGINX_SITE_SOURCE" ]; then
        cmp -s "$C_NGINX_SITE" "$rel/$C_NGINX_SITE_SOURCE" ||
            emit warn "the installed nginx site differs from the release: run cargo xtask setup-server to install it"
    fi
    seal_lines "$rel" >"$rel/.seal"
    revision=$(getv revision "")
    : "${revision:=}"
}

# The release's metadata (what `deploy list` shows); written when the release is made, so a
# release that fails in prepare still says which commit it was, and again once prepared.
write_meta() { # VENV
    {
        printf 'release=%s\n' "$opt_release"
        printf 'commit=%s\n' "$opt_commit"
        printf 'backend_commit=%s\n' "$(half_commit backend)"
        printf 'frontend_commit=%s\n' "$(half_commit frontend)"
        printf 'dirty=%s\n' "$opt_dirty"
        printf 'scope=%s\n' "$opt_scope"
        printf 'deployer=%s\n' "$opt_deployer"
        printf 'created=%s\n' "$(iso_now)"
        printf 'venv=%s\n' "$1"
        printf 'alembic_revision=-\n'
    } >"$rel/$C_META_FILE"
}

# Which commit a half of the release comes from (the carried-over half keeps its own).
half_commit() {
    local made=$opt_commit seed
    [ "$opt_dirty" = no ] || made="$opt_commit+dirty"
    case "$opt_scope:$1" in
        backend:frontend | frontend:backend)
            seed=$(current_release "$root")
            meta "$root/$C_RELEASES/$seed/$C_META_FILE" "$1_commit"
            ;;
        *) printf '%s' "$made" ;;
    esac
}

# The migration heads of a release, from its migration scripts (no Python needed).
release_heads() { # BACKEND_DIR
    cat "$1"/alembic/versions/*.py 2>/dev/null | awk '
        /^revision(: *[A-Za-z]+)? *= *["\x27]/ { gsub(/.*= *["\x27]|["\x27].*/, ""); rev[$0] = 1 }
        /^down_revision/ { line = $0; while (match(line, /["\x27][A-Za-z0-9_]+["\x27]/)) {
            down[substr(line, RSTART + 1, RLENGTH - 2)] = 1; line = substr(line, RSTART + RLENGTH) } }
        END { for (r in rev) if (!(r in down)) print r }' | LC_ALL=C sort | paste -sd, - || true
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

# deploytool SUBCOMMAND in BACKEND_DIR: its key=value output in $tool_out; fails with its error.
deploytool() { # BACKEND_DIR SUBCOMMAND
    tool_out=$(cd "$1" && .venv/bin/python -m "$C_DEPLOY_TOOL" "$2" 2>>"$toollog" </dev/null) && return 0
    tool_error=$(printf '%s\n' "$tool_out" | sed -n 's/^error=//p' | tail -n 1)
    tool_error=${tool_error:-"python -m $C_DEPLOY_TOOL $2 failed (log: $toollog)"}
    return 1
}

step_migrate() {
    local heads running
    heads=$(release_heads "$rel/backend")
    running=$(api_revision)
    if [ -n "$heads" ] && [ "$running" = "$heads" ]; then
        setv revision "$running"
        emit note migrate none "$running"
        return 0
    fi
    if ! deploytool "$rel/backend" migrate; then
        emit_details "$toollog" 30
        fail "database migration failed on $(hostname): $tool_error (log: $toollog)"
    fi
    setv revision "$(printf '%s\n' "$tool_out" | sed -n 's/^db_revision=//p' | tail -n 1)"
    emit note migrate "$(printf '%s\n' "$tool_out" | sed -n 's/^action=//p')" "$(getv revision)"
}

# --- activation ------------------------------------------------------------------------------

step_sync() { # RELEASE_DIR
    # Everything of the release is on disk before current can point at it.
    sync -f "$1"
}

# switch_to LINK: point current at LINK ('releases/NAME') with one rename; '' removes current.
switch_to() {
    local tmp=$root/.current.tmp.$$
    if [ -z "$1" ]; then
        rm -f "$root/$C_CURRENT"
    else
        ln -sfn "$1" "$tmp"
        mv -T "$tmp" "$root/$C_CURRENT"
    fi
    sync -f "$root" 2>/dev/null || true
}

step_switch() {
    local target=$1
    switch_to "$C_RELEASES/$target"
    printf '%s %s\n' "$(now_s)" "$target" >>"$root/$C_ASSETS/.history" 2>/dev/null || true
}

# restart UNIT...: in parallel, through the sudoers drop-in; a failure names the unit and what
# systemd said.
step_restart() {
    local u pids=() failed=""
    for u in "$@"; do
        # shellcheck disable=SC2024 # the output is ours to read, not root's to write
        sudo -n /usr/bin/systemctl restart "$u" </dev/null >"$jobdir/restart.$u" 2>&1 &
        pids+=("$!")
    done
    for u in "$@"; do
        if ! wait "${pids[0]}"; then
            failed="$failed$u: $(one_line "$(cat "$jobdir/restart.$u")" 300); "
        fi
        pids=("${pids[@]:1}")
    done
    [ -z "$failed" ] || fail "restart failed on $(hostname): ${failed%; }"
}

# health TIMEOUT_S STABLE_MS UNITS PROBES [MODE]: healthy when every unit has been active for
# at least STABLE_MS without systemd restarting it, and then every probe answers 2xx; the first
# failure (in the contract's order: the page needs the API) is the one reported. A unit that
# crashes and is restarted by systemd counts as a failure until it has been up for STABLE_MS
# again. Restart counts are compared with what they were when the check began (right after the
# restart): a manual restart does not always reset systemd's count (not from auto-restart).
# MODE `any` (a forced rollback while the database cannot be read) counts any HTTP answer of a
# probe: the process serves, the database is down.
step_health() {
    local timeout=$1 stable=$2 units=${3//,/ } probes=${4//,/ } mode=${5:-strict} deadline bad="" base r u p code
    deadline=$(($(now_ms) + timeout * 1000))
    monotonic_offset=$(monotonic_offset_ms)
    # shellcheck disable=SC2086 # validated unit names
    base=$(unit_states $units | awk '{ print $1, $3 }')
    while :; do
        # shellcheck disable=SC2086 # validated unit names
        r=$(unit_states $units)
        bad=$(printf '%s\n' "$r" | awk -v stable="$stable" -v base="$base" '
            BEGIN { n = split(base, b, "\n"); for (i = 1; i <= n; i++) { split(b[i], f, " "); r0[f[1]] = f[2] } }
            $2 != "active" { print "unit " $1 " is " $2; exit }
            $3 != r0[$1] { print "unit " $1 " restarted " ($3 - r0[$1]) " time(s) (it crashes)"; exit }
            $4 < stable { print "unit " $1 " is up for only " $4 "ms"; exit }')
        if [ -z "$bad" ]; then
            for p in $probes; do
                if [ "$mode" = any ]; then
                    code=$(curl -sS -o /dev/null -m 2 -w '%{http_code}' "$p" 2>/dev/null || true)
                    if [ "${code:-000}" = 000 ]; then
                        bad="$p does not answer"
                        break
                    fi
                elif ! curl -fsS -o /dev/null -m 2 "$p" 2>/dev/null; then
                    bad="$p does not answer 2xx"
                    break
                fi
            done
        fi
        [ -n "$bad" ] || return 0
        [ "$(now_ms)" -lt "$deadline" ] || break
        sleep 0.05
    done
    for u in $units; do
        if ! printf '%s\n' "$r" | awk -v u="$u" '$1 == u && $2 == "active" { found = 1 } END { exit !found }' ||
            printf '%s\n' "$bad" | grep -q "unit $u "; then
            emit detail "---- systemctl status $u"
            systemctl status --no-pager -n 0 "$u" >"$jobdir/status.$u" 2>&1 || true
            emit_details "$jobdir/status.$u" 12
            emit detail "---- journalctl -u $u (last 30 lines)"
            journal_tail "$u" 30 >"$jobdir/journal.$u" 2>&1 || true
            emit_details "$jobdir/journal.$u" 30
        fi
    done
    fail "not healthy after ${timeout}s: $bad"
}

# Put back what current was before the switch, restart, and check it.
step_restore() {
    local prev=$1 units=$2
    switch_to "$prev"
    [ -n "$prev" ] || return 0
    # shellcheck disable=SC2086 # validated unit names
    step_restart ${units//,/ }
    step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe" "$(getv probe_mode strict)"
}

# Switch, restart, check; on failure put the previous release back. Sets result.
# activate TARGET new|earlier: switch current to it, restart, check; on failure, back to the
# previous one. A new release is flushed to disk first (an earlier one was when it was made).
activate() {
    local target=$1 prev
    prev=$(current_link "$root")
    setv previous "$prev"
    if [ "$2" = new ] &&
        ! run_step sync "flush the release to disk" step_sync "$root/$C_RELEASES/$target"; then
        finish_with failed "$step_error; current was not touched"
        return
    fi
    if ! run_step switch "switch current -> $target" step_switch "$target"; then
        finish_with failed "$step_error"
        return
    fi
    # shellcheck disable=SC2086 # validated unit names
    if run_step restart "restart ${opt_restart//,/, }" step_restart ${opt_restart//,/ } &&
        run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe" "$(getv probe_mode strict)"; then
        if [ "$opt_verdict" = wait ]; then
            emit phase awaiting-verdict
            printf 'awaiting-verdict' >"$lock/phase"
            if await_msg commit revert && [ "$got" = commit ]; then
                finish_with success ""
                return
            fi
            restore_previous "$prev" "${stop_reason:-the fleet went back to the previous release}"
            return
        fi
        finish_with success ""
        return
    fi
    restore_previous "$prev" "$step_error"
}

restore_previous() { # PREV_LINK WHY
    local why=$2
    if [ -z "$1" ]; then
        run_step restore "remove current (there was no release before)" step_restore "" "" || true
        finish_with failed "$why; there was no release before it, current was removed"
        return
    fi
    if run_step restore "restore ${1#"$C_RELEASES"/}" step_restore "$1" "$opt_restart"; then
        finish_with rolled-back "$why"
    else
        finish_with rollback-failed "$why; then restoring ${1#"$C_RELEASES"/} failed: $step_error"
    fi
}

finish_with() { # RESULT REASON
    result=$1
    reason=$2
}

# --- the job ---------------------------------------------------------------------------------

job_deploy() {
    if [ "$opt_begin" != yes ]; then
        emit phase awaiting-begin
        if ! await_msg begin; then
            finish_with "$stop_result" "$stop_reason; stopped before it changed anything"
            return
        fi
    fi
    if ! run_step seed "seed release $opt_release" step_seed; then
        finish_with failed "$step_error"
        return
    fi
    made_release=yes
    emit phase awaiting-upload
    if ! await_msg uploaded; then
        finish_with "$stop_result" "$stop_reason; stopped while waiting for the upload; current was not touched"
        return
    fi
    if ! run_step prepare "prepare: env links, virtualenv, assets" step_prepare; then
        finish_with failed "$step_error; current was not touched"
        return
    fi
    emit phase awaiting-checks
    if ! await_msg checked; then
        finish_with "$stop_result" "$stop_reason; stopped before the migration; current was not touched"
        return
    fi
    if [ "$opt_scope" != frontend ] && [ "$opt_role" = primary ]; then
        if ! run_step migrate "migrate the database" step_migrate; then
            finish_with failed "$step_error; current was not touched"
            return
        fi
    else
        setv revision "$(api_revision)"
    fi
    emit phase awaiting-go
    if ! await_msg go; then
        finish_with "$stop_result" "$stop_reason; stopped before the switch; current was not touched"
        return
    fi
    activate "$opt_release" new
}

job_rollback() {
    local rev known
    if [ "$opt_begin" != yes ]; then
        emit phase awaiting-begin
        if ! await_msg begin; then
            finish_with "$stop_result" "$stop_reason; stopped before it changed anything"
            return
        fi
    fi
    rev=$(api_revision)
    if [ -n "$rev" ]; then
        known=no
        release_revisions "$root/$C_RELEASES/$opt_target/backend" | grep -qx -- "$rev" && known=yes
    elif deploytool "$root/$C_RELEASES/$opt_target/backend" revision; then
        rev=$(printf '%s\n' "$tool_out" | sed -n 's/^db_revision=//p')
        known=$(printf '%s\n' "$tool_out" | sed -n 's/^known=//p')
    else
        known=unreadable
    fi
    setv revision "${rev:--}"
    case "$known" in
        yes) ;;
        no)
            if [ "$opt_force" != yes ]; then
                finish_with refused "the database is at alembic revision $rev, which release $opt_target does not know (a newer release migrated it): rolling back the code alone runs $opt_target against that newer schema; if it is backward compatible, rerun with --force"
                return
            fi
            emit warn "the database is at $rev, which $opt_target does not know: continuing because of --force"
            ;;
        *)
            if [ "$opt_force" != yes ]; then
                finish_with refused "cannot read the database revision to check it ($tool_error); --force rolls the code back anyway"
                return
            fi
            emit warn "cannot read the database revision ($tool_error): continuing because of --force; the health checks take any HTTP answer of the probes as up (with the database unreachable they cannot prove more)"
            setv probe_mode any
            ;;
    esac
    if [ "$opt_begin" != yes ]; then
        # A fleet: switch when the client says it is this host's turn.
        emit phase awaiting-go
        if ! await_msg go; then
            finish_with "$stop_result" "$stop_reason; stopped before the switch; current was not touched"
            return
        fi
    fi
    activate "$opt_target" earlier
}

# Prune what the client chose (validated again here: never current, never this release), the
# job directories, virtualenvs no release uses, and assets no recent release serves. A pruned
# release is only moved into the trash here (one rename); empty_trash deletes it once the lock
# is released, so the deploy's result does not wait for the deletion.
prune_all() {
    local name cur keep_assets f r pruned=()
    cur=$(current_release "$root")
    mkdir -p "$root/$C_TRASH"
    f=$(find "$root/$C_TRASH" -mindepth 1 ! -user "$(id -u)" -print -quit 2>/dev/null || true)
    [ -z "$f" ] || emit warn "could not delete $f in $root/$C_TRASH: it is not $(id -un)'s (remove it as root)"
    for name in ${opt_prune//,/ }; do
        if [ "$name" = "$cur" ] || [ "$name" = "${opt_release:-}" ]; then continue; fi
        [ -d "$root/$C_RELEASES/$name" ] || continue
        # What is not ours cannot be deleted later: say so now and leave the release in place.
        f=$(find "$root/$C_RELEASES/$name" ! -user "$(id -u)" -print -quit 2>/dev/null || true)
        if [ -n "$f" ]; then
            emit warn "could not remove $root/$C_RELEASES/$name: $f is not $(id -un)'s; it is left for later (remove it as root)"
            continue
        fi
        if mv -T "$root/$C_RELEASES/$name" "$root/$C_TRASH/$name.$token" 2>>"$toollog"; then
            pruned+=("$name")
        else
            emit warn "could not remove $root/$C_RELEASES/$name (see $toollog); it is left for later"
        fi
    done
    if [ "${#pruned[@]}" -gt 0 ]; then
        emit note pruned "${#pruned[@]}" "${pruned[0]}" "${pruned[-1]}"
    fi
    # Job directories: the newest C_JOBS_KEPT.
    find "$root/$C_JOBS" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' 2>/dev/null |
        sort -rn | tail -n "+$((C_JOBS_KEPT + 1))" | cut -d' ' -f2- |
        while IFS= read -r f; do rm -rf -- "$f"; done
    # Virtualenvs no release links to.
    if [ -d "$root/$C_VENVS" ]; then
        for f in "$root/$C_VENVS"/*; do
            [ -d "$f" ] || continue
            if ! find "$root/$C_RELEASES" -mindepth 3 -maxdepth 3 -path '*/backend/.venv' -lname "*/${f##*/}" 2>/dev/null | grep -q .; then
                rm -rf -- "$f"
            fi
        done
    fi
    # Assets: keep those of every kept release and of every release that was current within the
    # last C_ASSET_GRACE_SECS.
    [ -d "$root/$C_ASSETS/.releases" ] || return 0
    keep_assets=$(
        {
            for f in "$root/$C_RELEASES"/*/; do
                f=${f%/}
                printf '%s\n' "${f##*/}"
            done
            [ -f "$root/$C_ASSETS/.history" ] &&
                awk -v cutoff="$(($(now_s) - ${opt_asset_grace:-$C_ASSET_GRACE_SECS}))" '
                    { if (NR > 1 && $1 >= cutoff) print prev; prev = $2 } END { if (NR) print prev }' \
                    "$root/$C_ASSETS/.history"
        } | LC_ALL=C sort -u
    )
    for f in "$root/$C_ASSETS/.releases"/*; do
        [ -f "$f" ] || continue
        r=${f##*/}
        printf '%s\n' "$keep_assets" | grep -qx -- "$r" || rm -f -- "$f"
    done
    (cd "$root/$C_ASSETS/_app/immutable" 2>/dev/null && find . -type f -printf '%P\n' | LC_ALL=C sort) >"$jobdir/assets.have" || true
    cat "$root/$C_ASSETS/.releases"/* 2>/dev/null | LC_ALL=C sort -u >"$jobdir/assets.keep" || true
    LC_ALL=C comm -23 "$jobdir/assets.have" "$jobdir/assets.keep" | while IFS= read -r f; do
        rm -f -- "$root/$C_ASSETS/_app/immutable/$f"
    done
    find "$root/$C_ASSETS/_app/immutable" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    if [ -f "$root/$C_ASSETS/.history" ]; then
        tail -n 200 "$root/$C_ASSETS/.history" >"$root/$C_ASSETS/.history.tmp" && mv -f "$root/$C_ASSETS/.history.tmp" "$root/$C_ASSETS/.history"
    fi
}

# Delete what earlier prunes moved into the trash (also what a killed job left there).
empty_trash() {
    local f
    for f in "$root/$C_TRASH"/*; do
        [ -e "$f" ] || continue
        chmod -R u+w "$f" 2>/dev/null || true
        rm -rf -- "$f" 2>>"$toollog" || true
    done
}

# The scripts of a succeeded release become the deploy root's scripts/ (the boot-time check).
install_scripts() {
    local f
    [ -d "$rel/scripts" ] && [ -d "$root/$C_SCRIPTS" ] && [ ! -L "$root/$C_SCRIPTS" ] || return 0
    for f in "$rel"/scripts/*.sh; do
        [ -f "$f" ] || continue
        cp -f "$f" "$root/$C_SCRIPTS/.${f##*/}.tmp.$$" && mv -f "$root/$C_SCRIPTS/.${f##*/}.tmp.$$" "$root/$C_SCRIPTS/${f##*/}"
    done
}

# Always runs last (EXIT trap): record the outcome, best effort for everything but the lock.
job_record() {
    local status=$? start end revision duration
    set +e
    trap - ERR
    if [ -z "${result:-}" ]; then
        result=failed
        reason="the deploy job stopped unexpectedly (exit $status${job_line:+, line $job_line}); current is $(current_link "$root")"
    fi
    printf 'record' >"$lock/phase" 2>/dev/null
    test_pause record
    start=$(now_ms)
    emit step record start "record the result and unlock"
    revision=$(getv revision -)
    if [ "$opt_mode" = deploy ] && [ "${made_release:-}" = yes ] && [ -d "$rel" ]; then
        if [ "$result" = success ]; then
            put "$rel/$C_STATE_FILE" "$C_STATE_SUCCEEDED" || emit warn "could not mark $opt_release $C_STATE_SUCCEEDED"
        else
            put "$rel/$C_STATE_FILE" "$C_STATE_FAILED" 2>/dev/null || {
                # A full disk: the partial upload goes first, so the state can be written.
                rm -rf "${rel:?}/backend" "${rel:?}/frontend"
                put "$rel/$C_STATE_FILE" "$C_STATE_FAILED" || emit warn "could not mark $opt_release failed"
            }
        fi
        if [ -f "$rel/$C_META_FILE" ]; then
            sed -i "s/^alembic_revision=.*/alembic_revision=$revision/" "$rel/$C_META_FILE" 2>/dev/null || true
        fi
    fi
    [ "$result" != success ] || install_scripts || emit warn "could not install the scripts of $opt_release into $root/$C_SCRIPTS"
    end=$(now_ms)
    duration=$(secs_between "$opt_started_ms" "$end")
    log_line "$root" "$opt_started" "$opt_deployer" "$opt_commit$([ "$opt_dirty" = yes ] && echo +dirty)" \
        "$([ "$opt_mode" = rollback ] && echo rollback || echo "$opt_scope")" \
        "$([ "$opt_mode" = rollback ] && echo "$opt_target" || echo "$opt_release")" \
        "$result" "$duration" "$revision" "$reason" || emit warn "could not append to $root/$C_LOG"
    if [ "$result" = success ]; then
        prune_all || emit warn "pruning stopped early (see $toollog)"
    fi
    {
        out result "$result"
        out reason "$reason"
        out duration "$duration"
        out revision "$revision"
        out current "$(current_link "$root")"
    } >"$jobdir/result" 2>/dev/null
    emit step record ok "$(secs_between "$start" "$(now_ms)")"
    release_lock "$root" "$token" >/dev/null
    emit result "$result" "$reason" "$duration" "$revision" "$(current_link "$root")"
    emit phase "done"
    empty_trash
}

# job root=ROOT token=TOKEN: the detached job; its plan is the lock's plan file.
sub_job() {
    parse_opts job "$@"
    check_root "$opt_root"
    check_word token "$opt_token"
    root=$opt_root
    token=$opt_token
    # The job's own files (events, tool output, journal tails) are private; steps that make
    # release files readable by nginx say so themselves.
    umask 077
    lock=$(lock_dir "$root")
    jobdir=$root/$C_JOBS/$token
    events=$jobdir/events
    toollog=$jobdir/tool.log
    [ "$(meta "$lock/info" token)" = "$token" ] || exit 1
    exec 8>"$lock/job.lock"
    flock -n 8 || exit 1
    exec 6<>"$lock/fifo"
    printf '%s\n' "$$" >"$jobdir/pid"
    # The plan was validated by run; read it back the same way.
    local kv
    while IFS= read -r kv; do parse_opts plan "$kv"; done <"$lock/plan"
    rel=$root/$C_RELEASES/${opt_release:-none}
    result="" reason="" made_release=""
    trap job_record EXIT
    trap 'job_line=$LINENO' ERR
    trap '' HUP INT
    emit started "$opt_mode" "${opt_release:-$opt_target}" "$(hostname)"
    if [ "$opt_mode" = rollback ]; then job_rollback; else job_deploy; fi
}
