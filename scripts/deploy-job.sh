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
#     C_CLIENT_GRACE_SECS stops the job at the next wait, or during the snapshot of the database
#     that comes right before the migration: nothing is migrated or switched;
#   - once the migration has started, the job finishes the whole activation by itself
#     (fleets: a host that is healthy waits for the client's verdict and goes back without one).
#   - a SIGTERM (what a shutdown sends) before the switch stops it like an abort; after the
#     switch it puts the previous release back as current (flushed, not restarted: the units
#     start it at boot) and records that.
# Every step runs as a child process, so `set -e` holds inside it, and its line tells how long
# it took. Events (see emit) go to jobs/TOKEN/events, which `follow` streams to the client.
# Every file it writes is written whole or not at all (deploy-lib.sh); a result it cannot record
# stays in its lock for the next job (deploy-lock.sh).

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-lib.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-lib.sh"
    # shellcheck source=scripts/deploy-lock.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-lock.sh"
    # shellcheck source=scripts/deploy-seal.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-seal.sh"
fi

# --- events and job variables ----------------------------------------------------------------

# emit KIND FIELD...: one event line, tab-separated, prefixed with the server's time in ms; a
# whole line or none (a full disk loses the event, never the stream's shape). A phase is also
# the lock's phase (what `status` and a takeover name).
emit() {
    local line f
    line=$(now_ms)
    for f in "$@"; do
        line+=$'\t'"$(one_line "$f")"
    done
    append_line "$events" "$line" || true
    if [ "$1" = phase ] && [ "$2" != "done" ]; then put "$lock/phase" "$2" || true; fi
}

# Lines of a file as detail events (tool output).
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
# A step the deployer may still stop (the snapshot: it watches for an abort or silence itself)
# that was stopped ends with a `stopped` event; step_stopped then holds `RESULT: WHY`.
run_step() {
    local name=$1 label=$2 start status=0 pid
    shift 2
    rm -f "$jobdir/step.error" "$jobdir/v.stopped"
    step_stopped=""
    put "$lock/phase" "$name" || true
    # The snapshot pauses inside its step (its dump written beside its final name).
    if [ "$name" != snapshot ] && ! test_pause "$name"; then
        finish_with "$stop_result" "$stop_reason; stopped before $name; current was not touched"
        exit 0
    fi
    start=$(now_ms)
    emit step "$name" start "$label"
    "$@" &
    pid=$!
    step_pid=$pid
    wait "$pid" || status=$?
    step_pid=""
    step_stopped=$(getv stopped "")
    if [ "$status" = 0 ]; then
        emit step "$name" ok "$(secs_between "$start" "$(now_ms)")"
    elif [ -n "$step_stopped" ]; then
        step_error=${step_stopped#*: }
        emit step "$name" stopped "$(secs_between "$start" "$(now_ms)")" "$step_error"
    else
        step_error=$(cat "$jobdir/step.error" 2>/dev/null || true)
        # A full disk takes the step's own words with it (step.error, tool.log): say it.
        if [ -z "$step_error" ] && disk_full "$root"; then
            step_error="$label failed: No space left on device under $root on $(hostname) (exit $status): free space there and deploy again"
        fi
        step_error=${step_error:-"$label failed (exit $status); see $jobdir/tool.log"}
        emit step "$name" failed "$(secs_between "$start" "$(now_ms)")" "$step_error"
    fi
    return "$status"
}

# Whether the filesystem of DIR has no space left for the app user (df's available column).
disk_full() { # DIR
    [ "$(df -Pk -- "$1" 2>/dev/null | awk 'NR == 2 { print $4 }')" = 0 ]
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

# Wait up to a second for the fifo to wake the job (fd 6: a message came), in a child the job
# `wait`s for: a signal's trap (a shutdown's SIGTERM: put current back, record) then runs once
# `wait` returns. Never bash's own `read -t`: a trap run inside it is cut short when the read's
# timer fires (at the trap's next command substitution, which jumps back into the read), and
# the job lost its record. The nap does not hold the lock's flock (fd 8): a job killed while it
# waits leaves no process holding its lock, so its death shows at once.
nap() {
    timeout 1 head -c 1 <&6 >/dev/null 2>&1 8>&- &
    wait "$!" || true
}

# await_msg NAME...: returns 0 when one of the messages arrived (its name in $got); 1 when the
# client aborted or went silent (see stop_asked).
await_msg() {
    local m
    while :; do
        for m in "$@"; do
            if [ -e "$lock/msg/$m" ]; then
                got=$m
                return 0
            fi
        done
        ! stop_asked || return 1
        nap
    done
}

# Test hook (plan key pause_at, the deployer's INNERCONTEXT_TEST_PAUSE_AT): when step STEP is
# about to start, write $lock/paused (holding the step) and wait while it exists. Before the
# checks passed (seed, prepare) an abort or a silent client still stops the job (returns 1); so
# it does in the snapshot, which pauses inside its step, once its dump is written beside its
# final name (a test strikes while that file exists), and before an env file is written.
test_pause() { # STEP
    [ -n "$opt_pause_at" ] && [ "$opt_pause_at" = "$1" ] || return 0
    put "$lock/paused" "$1" || return 0
    emit info "paused before $1 (test hook): remove $lock/paused to go on"
    while [ -e "$lock/paused" ]; do
        case "$1" in
            seed | prepare | snapshot | env-write) ! stop_asked || return 1 ;;
        esac
        nap
    done
}

# --- the release -----------------------------------------------------------------------------

# The release a job builds on and a failure goes back to: current when it succeeded; else (a
# job died after its switch, current failed or dangles) the newest intact release, and current
# only when there is none. Sets base ('' when there is nothing).
pick_base() {
    local cur good
    cur=$(current_release "$root")
    base=$cur
    if [ -z "$cur" ] || [ "$(settled_state "$root" "$cur")" != "$C_STATE_SUCCEEDED" ]; then
        good=$(newest_intact "$root" "$cur" "$opt_target")
        if [ -n "$good" ]; then
            base=$good
            emit info "current is ${cur:-$(current_status "$root")}, not a $C_STATE_SUCCEEDED release: this job builds on $good (the newest $C_STATE_SUCCEEDED, intact release) and goes back to it on failure"
        fi
    fi
}

step_seed() {
    local cur part
    umask 022
    mkdir "$rel" || fail "release $opt_release already exists on $(hostname)"
    put "$rel/$C_STATE_FILE" "$C_STATE_PREPARING" || fail "could not write the state of $rel: $put_error"
    write_meta - || fail "could not write the metadata of $rel: $put_error"
    if [ -z "$base" ]; then
        emit note seed none "$(current_status "$root")"
        return 0
    fi
    cur=$base
    for part in backend frontend scripts systemd nginx; do
        # deploy --clean: nothing this deploy ships is taken over, every such file comes with
        # the upload (a half deploy still carries the other half over from current).
        if [ "$opt_clean" = yes ] && in_list "$part" "$(shipped_parts)"; then continue; fi
        if [ -d "$root/$C_RELEASES/$cur/$part" ]; then
            cp -al "$root/$C_RELEASES/$cur/$part" "$rel/$part"
        fi
    done
    # The virtualenv link and the env links are made again by prepare. Nothing the app user
    # could have written is taken over unchecked: no link (a release ships none), no bytecode
    # (prepare compiles it again; a planted .pyc with the source's size and time would run).
    # The files themselves are compared with the deployer's hashes before the upload
    # (deploy.sh compare), and those that differ are sent again.
    rm -rf "$rel/backend/.venv"
    remove_env_links
    find "$rel" -mindepth 1 -type l -delete
    find "$rel" -type d -name __pycache__ -prune -exec rm -rf {} +
    if [ "$opt_clean" = yes ]; then
        case "$opt_scope" in
            backend) part=frontend ;;
            frontend) part=backend ;;
            *) part="" ;;
        esac
        emit note seed none clean "$cur" "$part"
        return 0
    fi
    emit note seed "$cur" linked
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
# built once with uv (from the shared cache, hard-linked) and linked from backend/.venv. One
# that is reused is checked first against what uv installed (venv_check): a tampered one is
# left to the releases that use it and a fresh one is built beside it (KEY.RELEASE), which the
# releases after this one reuse. With --clean none is reused: KEY.RELEASE is built from an
# empty uv cache (clean_venv).
link_venv() {
    local key name venv py uvv found n list status=0
    py=$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')
    uvv=$(uv --version)
    key=$( (cat "$rel/backend/uv.lock" "$rel/backend/pyproject.toml" && printf '%s\n%s\n' "$py" "$uvv") | sha256sum | cut -c1-16)
    settle_uv_cache
    mkdir -p "$root/$C_VENVS" "$root/$C_UV_CACHE"
    if [ "$opt_clean" = yes ]; then
        name=$key.$opt_release
        clean_venv "$root/$C_VENVS/$name"
        emit note venv "$name" clean
        ln -sfn "../../../$C_VENVS/$name" "$rel/backend/.venv"
        setv venv "$name"
        return 0
    fi
    name=$key
    found=$(readlink "$root/$C_RELEASES/${base:-none}/backend/.venv" 2>/dev/null || true)
    found=${found##*/}
    case "$found" in
        "$key".[0-9]*T[0-9]*Z) [ ! -f "$root/$C_VENVS/$found/.complete" ] || name=$found ;;
    esac
    venv=$root/$C_VENVS/$name
    if [ ! -f "$venv/.complete" ]; then
        build_venv "$venv"
        emit note venv "$name" built
    else
        found=$(venv_check "$venv" "$jobdir/venv-reference") || status=$?
        case "$status" in
            0) emit note venv "$name" reused ;;
            1)
                n=$(printf '%s\n' "$found" | grep -c .)
                list=$(printf '%s\n' "$found" | head -n 5 | paste -sd ';' - | sed 's/;/; /g')
                [ "$n" -le 5 ] || list+="; and $((n - 5)) more"
                emit warn "virtualenv $name on $(hostname) was changed after uv installed it ($list): not reused, a fresh one is built"
                name=$key.$opt_release
                venv=$root/$C_VENVS/$name
                build_venv "$venv"
                emit note venv "$name" rebuilt "$n"
                ;;
            *) fail "checking the virtualenv $venv failed on $(hostname): $(one_line "$found" 300)" ;;
        esac
    fi
    ln -sfn "../../../$C_VENVS/$name" "$rel/backend/.venv"
    setv venv "$name"
}

# uv sync into VENV (from the release's backend) with the uv cache CACHE (default: the shared
# one), then the same check as before a reuse: a virtualenv built tampered holds the uv cache's
# files (hard links), so the cache is.
build_venv() { # VENV [CACHE]
    local venv=$1 cache=${2:-$root/$C_UV_CACHE} found status=0
    rm -rf "$venv"
    if ! (cd "$rel/backend" &&
        UV_PROJECT_ENVIRONMENT=$venv UV_CACHE_DIR=$cache UV_PYTHON_DOWNLOADS=never \
            UV_LINK_MODE=hardlink UV_SYSTEM_CERTS=1 uv sync --locked --no-dev --no-install-project \
            --no-progress --compile-bytecode --python /usr/bin/python3 </dev/null >>"$toollog" 2>&1); then
        rm -rf "$venv"
        emit_details "$toollog" 20
        fail "uv sync failed in $rel/backend on $(hostname) (log: $toollog)"
    fi
    found=$(venv_check "$venv" "$jobdir/venv-reference") || status=$?
    if [ "$status" != 0 ]; then
        rm -rf "$venv"
        if [ "$cache" = "$root/$C_UV_CACHE" ]; then
            fail "the virtualenv uv just built differs from what it installed ($(one_line "$found" 200)): the uv cache $cache holds changed files; 'cargo xtask deploy --clean' builds from a fresh one and replaces it"
        fi
        fail "the virtualenv uv just built from an empty cache differs from what it installed ($(one_line "$found" 200)): something running as $(id -un) on $(hostname) changed $cache while uv filled it; stop it and deploy --clean again"
    fi
    : >"$venv/.complete"
}

# deploy --clean: VENV built from an empty uv cache (C_UV_CACHE_FRESH), nothing hard-linked from
# the shared one, which the app user could have changed; checked as every build is. Only then the
# fresh cache replaces the shared one: two renames (the old one aside as C_UV_CACHE_OLD, the fresh
# one in), and the old one goes to the trash (deleted after the lock is released). A build that
# fails leaves the shared cache as it was; a job that dies between the renames is finished by
# the next job's settle_uv_cache. The releases kept for rollback keep their virtualenvs: their
# files are hard links, they need no cache.
clean_venv() { # VENV
    local cache=$root/$C_UV_CACHE fresh=$root/$C_UV_CACHE_FRESH old=$root/$C_UV_CACHE_OLD
    rm -rf "$fresh"
    mkdir "$fresh"
    if ! (build_venv "$1" "$fresh"); then
        rm -rf "$fresh"
        exit 1
    fi
    mv -T "$cache" "$old"
    mv -T "$fresh" "$cache"
    mkdir -p "$root/$C_TRASH"
    mv -T "$old" "$root/$C_TRASH/uv-cache.$token" || rm -rf "$old"
}

# What a clean_venv that died left: past its first rename (the shared cache aside, none in its
# place) the fresh cache was whole, so it goes in; before it, the shared cache is as it was and
# the fresh one half made, so it goes.
settle_uv_cache() {
    local cache=$root/$C_UV_CACHE fresh=$root/$C_UV_CACHE_FRESH old=$root/$C_UV_CACHE_OLD
    if [ ! -e "$cache" ] && [ -d "$old" ]; then
        if [ -d "$fresh" ]; then mv -T "$fresh" "$cache"; else mv -T "$old" "$cache"; fi
        emit info "a deploy --clean died while it swapped the uv cache: $cache is now $([ -d "$old" ] && echo "the fresh one it built" || echo "the one from before it")"
    fi
    rm -rf "$fresh" "$old"
}

# Hard-link the release's immutable frontend assets into shared/assets (nginx serves them from
# there, so pages open before a deploy keep loading their chunks), and record which they are.
share_assets() {
    local src=$rel/$C_IMMUTABLE dest=$root/$C_ASSETS/_app/immutable
    [ -d "$src" ] || return 0
    mkdir -p "$dest" "$root/$C_ASSETS/.releases"
    chmod 0755 "$root/$C_ASSETS" "$root/$C_ASSETS/_app" "$dest"
    if [ "$opt_clean" = yes ]; then
        # deploy --clean: the release's files replace same-named ones (which may have been changed).
        cp -al --remove-destination "$src/." "$dest/" ||
            fail "could not put the frontend assets of $opt_release in $dest"
    else
        cp -aln "$src/." "$dest/" || true
    fi
    put "$root/$C_ASSETS/.releases/$opt_release" "$(cd "$src" && find . -type f -printf '%P\n' | LC_ALL=C sort)" ||
        fail "could not record the assets of $opt_release: $put_error"
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
    write_meta "$(getv venv -)" || fail "could not write the metadata of $rel: $put_error"
    # Units and the nginx site are installed by setup-server: say when they drifted.
    for unit in "$rel"/systemd/*.service "$rel"/systemd/*.socket; do
        [ -f "$unit" ] || continue
        name=${unit##*/}
        cmp -s "$C_UNIT_DIR/$name" "$unit" ||
            emit warn "$C_UNIT_DIR/$name differs from the release: run cargo xtask setup-server to install it"
    done
    if [ -f "$rel/$C_NGINX_SITE_SOURCE" ]; then
        cmp -s "$C_NGINX_SITE" "$rel/$C_NGINX_SITE_SOURCE" ||
            emit warn "the installed nginx site differs from the release: run cargo xtask setup-server to install it"
    fi
    put "$rel/.seal" "$(seal_lines "$rel")" || fail "could not write the seal of $rel: $put_error"
    revision=$(getv revision "")
    : "${revision:=}"
}

# The release's metadata (what `deploy list` shows); written when the release is made, so a
# release that fails in prepare still says which commit it was, and again once prepared.
write_meta() { # VENV
    put "$rel/$C_META_FILE" "$(
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
    )"
}

# Which commit a half of the release comes from (the carried-over half keeps its own).
half_commit() {
    local made=$opt_commit
    [ "$opt_dirty" = no ] || made="$opt_commit+dirty"
    case "$opt_scope:$1" in
        backend:frontend | frontend:backend)
            meta "$root/$C_RELEASES/${base:-none}/$C_META_FILE" "$1_commit"
            ;;
        *) printf '%s' "$made" ;;
    esac
}

# --- the snapshot before the migration -------------------------------------------------------

# Whether the database is at this release's migration heads, as the running API reports it:
# nothing to migrate, so no snapshot (step_migrate says so).
at_heads() {
    local heads
    heads=$(release_heads "$rel/backend")
    [ -n "$heads" ] && [ "$(api_revision)" = "$heads" ]
}

# On the primary, before the migration: the snapshot step, unless the database is at the
# release's heads already or the plan turned snapshots off. Returns 1 (the job's result set)
# when it failed or the deployer stopped it: the job ends before the migration.
snapshot_before_migration() {
    if [ "$opt_db_snapshot" = off ] || at_heads; then return 0; fi
    run_step snapshot "snapshot the database" step_snapshot && return 0
    if [ -n "$step_stopped" ]; then
        finish_with "${step_stopped%%:*}" "${step_stopped#*: }; stopped during the snapshot, before the migration (the partial dump was removed); current was not touched"
    else
        finish_with failed "$step_error; current was not touched"
    fi
    return 1
}

# pg_dump --format=custom of the app's database into C_DB_SNAPSHOTS/RELEASE-REVISION.dump, where
# RELEASE ran on that data (current) and REVISION is its migration revision: written beside
# (.NAME.dump.tmp.PID) and renamed once whole and flushed, then recorded (NAME.record: revision,
# size, sha256). The connection comes from the release's env through its deploy tool
# (snapshot-info), the password through a PGPASSFILE of the job's (0600, removed after): never a
# command line. The deployer can still stop it: an abort or a silent deployer (as at the job's
# waits), or a SIGTERM, stops pg_dump and removes what it wrote.
#
# In a rollback with --migrate-down it runs after the switch, before the downgrade: with the
# scripts of the release that wrote the revision (v.down_writer), named after the release that
# ran on that data (the one rolled back from), and the deployer can no longer stop it.
step_snapshot() {
    local rev heads release name dir dest server client host port user dbname size sum v status=0
    local backend=$rel/backend before=$opt_release stoppable=yes
    snap_tmp="" snap_pgpass="" dump_pid=""
    trap snapshot_cleanup EXIT
    trap 'exit 143' TERM
    if [ "$opt_mode" = rollback ]; then
        backend=$root/$C_RELEASES/$(getv down_writer)/backend
        before=$opt_target
        stoppable=no
    fi
    [ "$stoppable" = no ] || ! stop_asked || snapshot_stopped
    if ! deploytool "$backend" snapshot-info; then
        fail "cannot snapshot the database before the migration on $(hostname): $tool_error; nothing was migrated"
    fi
    rev=$(tool_value db_revision)
    heads=$(release_heads "$backend")
    if [ "$opt_mode" = deploy ] && [ "$rev" = "$heads" ]; then
        emit note snapshot none "the database is at $rev already"
        return 0
    fi
    if [ "$rev" = - ]; then
        emit note snapshot none "the database has no revision yet"
        return 0
    fi
    server=$(tool_value server_major)
    host=$(tool_value host)
    port=$(tool_value port)
    user=$(tool_value user)
    dbname=$(tool_value database)
    for v in "$host" "$port" "$user" "$dbname" "$server"; do
        case "$v" in '' | -* | *[!A-Za-z0-9._:-]*) fail "the database's connection facts on $(hostname) are not plain words ('$v', from DATABASE_URL): the snapshot cannot be taken; nothing was migrated" ;; esac
    done
    command -v pg_dump >/dev/null ||
        fail "pg_dump is missing on $(hostname), so the database cannot be snapshotted before the migration: run cargo xtask setup-server (it installs postgresql-client), or deploy with $C_DB_SNAPSHOT_ENV=off (no snapshot: no way back for the data); nothing was migrated"
    client=$(pg_dump --version 2>/dev/null | awk '{print $3}')
    if ! major_at_least "$client" "$server"; then
        fail "pg_dump on $(hostname) is PostgreSQL $(major_of "$client") ($client), older than the database server at $host:$port (PostgreSQL $server): pg_dump cannot dump a newer server; install postgresql-client-$server on $(hostname) (from apt.postgresql.org), or deploy with $C_DB_SNAPSHOT_ENV=off (no snapshot: no way back for the data); nothing was migrated"
    fi
    # Named after the release that was running on this data (pruned with it).
    release=$(current_release "$root")
    release=${release:-${base:-$opt_release}}
    [ "$opt_mode" = deploy ] || release=${activated_from#"$C_RELEASES"/}
    name=$(snapshot_name "$release" "$rev") ||
        fail "cannot name a snapshot of revision '$rev' of release '$release' on $(hostname); nothing was migrated"
    dir=$root/$C_DB_SNAPSHOTS
    [ ! -L "$dir" ] || fail "$dir on $(hostname) is a link, not a directory: remove it (the job makes the directory); nothing was migrated"
    mkdir -p "$dir"
    chmod 0700 "$dir"
    # What a job killed during its snapshot left, half written (only the lock's holder writes here).
    find "$dir" -maxdepth 1 -type f -name ".*$C_DB_DUMP.tmp.*" -delete 2>/dev/null || true
    dest=$dir/$name$C_DB_DUMP
    snap_tmp=$dir/.$name$C_DB_DUMP.tmp.$BASHPID
    snap_pgpass=$jobdir/pgpass
    rm -f "$snap_pgpass"
    deploytool "$backend" pgpass "$snap_pgpass" ||
        fail "could not write the password file for pg_dump on $(hostname): $tool_error; nothing was migrated"
    (PGPASSFILE=$snap_pgpass PGCONNECT_TIMEOUT=10 exec pg_dump --format=custom --no-password \
        "--host=$host" "--port=$port" "--username=$user" "--dbname=$dbname" "--file=$snap_tmp" \
        </dev/null 2>"$jobdir/pg_dump.err") &
    dump_pid=$!
    while kill -0 "$dump_pid" 2>/dev/null; do
        [ "$stoppable" = no ] || ! stop_asked || snapshot_stopped
        nap
    done
    wait "$dump_pid" || status=$?
    dump_pid=""
    rm -f "$snap_pgpass"
    if [ "$status" != 0 ]; then
        emit_details "$jobdir/pg_dump.err" 10
        fail "pg_dump of the database $dbname at $host:$port failed on $(hostname) (exit $status: $(one_line "$(tail -n 1 "$jobdir/pg_dump.err" 2>/dev/null)" 300)); nothing was migrated"
    fi
    test_pause snapshot || snapshot_stopped
    size=$(stat -c %s "$snap_tmp")
    sum=$(sha256sum "$snap_tmp" | cut -d' ' -f1)
    sync -- "$snap_tmp" || fail "could not flush the snapshot $snap_tmp on $(hostname); nothing was migrated"
    mv -fT -- "$snap_tmp" "$dest" || fail "could not rename the snapshot into $dest on $(hostname); nothing was migrated"
    snap_tmp=""
    if ! put "$dir/$name$C_DB_RECORD" "$(
        printf 'release=%s\n' "$release"
        printf 'revision=%s\n' "$rev"
        printf 'size=%s\n' "$size"
        printf 'sha256=%s\n' "$sum"
        printf 'created=%s\n' "$(iso_now)"
        printf 'created_epoch=%s\n' "$(now_s)"
        printf 'database=%s\n' "$dbname"
        printf 'server=%s:%s\n' "$host" "$port"
        printf 'server_major=%s\n' "$server"
        printf 'pg_dump=%s\n' "$client"
        printf 'before=%s\n' "$before"
    )"; then
        rm -f "$dest"
        fail "could not record the snapshot $dest on $(hostname) ($put_error); nothing was migrated"
    fi
    sync -f "$dir" 2>/dev/null || true
    setv snapshot "$name$C_DB_DUMP"
    emit note snapshot taken "$size" "$name$C_DB_DUMP"
}

# The step's end when the deployer asked it to stop (or fell silent): run_step reports it
# stopped (v.stopped: `RESULT: WHY`); the step's EXIT trap removes what it wrote.
snapshot_stopped() {
    setv stopped "$stop_result: $stop_reason"
    exit 3
}

# The snapshot step's EXIT trap (a failure, a stop, a SIGTERM): stop pg_dump if it runs, remove
# the partial dump and the password file.
snapshot_cleanup() {
    if [ -n "${dump_pid:-}" ]; then
        kill -TERM "$dump_pid" 2>/dev/null || true
        wait "$dump_pid" 2>/dev/null || true
    fi
    if [ -n "${snap_pgpass:-}" ]; then rm -f -- "$snap_pgpass"; fi
    if [ -n "${snap_tmp:-}" ]; then rm -f -- "$snap_tmp"; fi
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
    [ "$opt_db_snapshot" != off ] || emit note snapshot off
    if ! deploytool "$rel/backend" migrate; then
        emit_details "$toollog" 30
        fail "database migration failed on $(hostname): $tool_error (log: $toollog)"
    fi
    setv revision "$(printf '%s\n' "$tool_out" | sed -n 's/^db_revision=//p' | tail -n 1)"
    emit note migrate "$(printf '%s\n' "$tool_out" | sed -n 's/^action=//p')" "$(getv revision)"
}

# deploy --maintenance, before the snapshot and the migration: the page, then the flag, with
# this job's token (the record step turns off only that). Maintenance that was on before the
# job stays on, and the record step leaves it on.
step_maintenance() {
    local f=$root/$C_MAINTENANCE_FLAG
    if [ -e "$f" ] || [ -L "$f" ]; then
        emit info "maintenance was already on (since $(meta "$f" since), by $(meta "$f" by)): this deploy leaves it on"
        return 0
    fi
    maint_on "$root" "$C_MAINTENANCE_DEPLOY_MESSAGE" "$opt_deployer" "$token" ||
        fail "could not turn maintenance on under $root on $(hostname) ($put_error)"
}

# --- activation ------------------------------------------------------------------------------

step_sync() { # RELEASE_DIR
    # Everything of the release is on disk before current can point at it.
    sync -f "$1"
}

# switch_to LINK: point current at LINK ('releases/NAME') with one rename, flushed; '' removes
# current. Fails (and leaves nothing behind) when the link cannot be made.
switch_to() {
    local tmp=$root/.current.tmp.$$
    if [ -z "$1" ]; then
        rm -f "$root/$C_CURRENT"
    elif ! { ln -sfn "$1" "$tmp" && mv -T "$tmp" "$root/$C_CURRENT"; }; then
        rm -f "$tmp"
        return 1
    fi
    sync -f "$root" 2>/dev/null || true
}

step_switch() {
    local target=$1
    switch_to "$C_RELEASES/$target" || fail "could not switch current to $target on $(hostname)"
    append_line "$root/$C_ASSETS/.history" "$(now_s) $target" ||
        emit warn "could not note the switch in $root/$C_ASSETS/.history ($put_error): assets of $target may be pruned early"
}

# restart UNIT...: in parallel, through the sudoers drop-in; a failure names the unit and what
# systemd said. Each unit's failed state and start counter (and its socket's) are cleared first,
# so systemd's start limit never decides a deploy or a restore however fast they follow each
# other; its restart count right after its restart is what health compares with.
step_restart() {
    local u pids=() failed=""
    for u in "$@"; do
        # shellcheck disable=SC2024,SC2046 # our output; the unit and its socket: validated words
        {
            sudo -n /usr/bin/systemctl reset-failed $(reset_targets "$u") </dev/null &&
                sudo -n /usr/bin/systemctl restart "$u" </dev/null &&
                restart_count "$u" >"$jobdir/base.$u"
        } >"$jobdir/restart.$u" 2>&1 &
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

# How many times systemd has restarted UNIT on its own (NRestarts).
restart_count() { # UNIT
    local n
    n=$(systemctl show -p NRestarts --value "$1" 2>/dev/null || true)
    printf '%s\n' "${n:-0}"
}

# health TIMEOUT_S STABLE_MS UNITS PROBES [MODE]: healthy when every unit has been active for
# at least STABLE_MS without systemd restarting it, and then every probe answers 2xx; the first
# failure (in the contract's order: the page needs the API) is the one reported. Restart counts
# are compared with the ones step_restart read right after each unit's restart (so after its
# reset-failed; a unit it did not restart: when the check begins). A unit that systemd restarted
# once counts as a failure until the timeout; one it restarted C_CRASH_LOOP_RESTARTS times (a
# crash loop), or one that is failed or inactive (it will not come back by itself), fails the
# check at once. MODE `any` (a forced rollback while the database cannot be read) counts any
# HTTP answer of a probe: the process serves, the database is down.
step_health() {
    local timeout=$1 stable=$2 units=${3//,/ } probes=${4//,/ } mode=${5:-strict} deadline bad="" base="" r u p code
    deadline=$(($(now_ms) + timeout * 1000))
    monotonic_offset=$(monotonic_offset_ms)
    for u in $units; do
        base+="$u $(cat "$jobdir/base.$u" 2>/dev/null || restart_count "$u")"$'\n'
    done
    while :; do
        # shellcheck disable=SC2086 # validated unit names
        r=$(unit_states $units)
        bad=$(printf '%s\n' "$r" | health_verdict "$base" "$stable")
        if [ -z "$bad" ]; then
            for p in $probes; do
                if [ "$mode" = any ]; then
                    code=$(curl -sS -o /dev/null -m 2 -w '%{http_code}' "$p" 2>/dev/null || true)
                    if [ "${code:-000}" = 000 ]; then
                        bad="$p does not answer"
                        break
                    fi
                else
                    code=$(curl -sS -o "$jobdir/probe.body" -m "$C_PROBE_TIMEOUT_SECS" -w '%{http_code}' "$p" 2>/dev/null || true)
                    case "$code" in
                        2??) ;;
                        *)
                            bad="$p $(probe_said "$code" "$jobdir/probe.body")"
                            break
                            ;;
                    esac
                fi
            done
        fi
        [ -n "$bad" ] || return 0
        case "$bad" in "at once: "*) break ;; esac
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
            # Journal events: the deployer keeps them out of CI logs unless asked.
            tail -n 30 "$jobdir/journal.$u" | while IFS= read -r l; do emit journal-line "$l"; done
        fi
    done
    case "$bad" in
        "at once: "*) fail "${bad#at once: }" ;;
        *) fail "not healthy after ${timeout}s: $bad" ;;
    esac
}

# probe_said CODE BODY_FILE: what a probe that did not answer 2xx said, for the failure line: the
# API's own reason (its health check answers 503 with one when the database is unavailable)
# when its body has one, one line, at most 200 characters.
probe_said() { # CODE BODY_FILE
    local why
    case "${1:-000}" in
        000) printf 'does not answer (nothing within %ss)' "$C_PROBE_TIMEOUT_SECS" ;;
        *)
            why=$(head -c 2000 "$2" 2>/dev/null | sed -n 's/.*"reason": *"\([^"]*\)".*/\1/p' | head -n 1)
            printf 'answered %s%s' "$1" "${why:+: $(one_line "$why" 200)}"
            ;;
    esac
}

# health_verdict BASE STABLE < unit_states lines: what is wrong, '' when the units are fine. A
# crash loop or a unit that is failed or inactive, in any unit, comes first, as "at once: ...";
# else the first unit (in order) that is not active, was restarted, or is up too briefly.
health_verdict() { # BASE STABLE
    awk -v base="$1" -v stable="$2" -v loop="$C_CRASH_LOOP_RESTARTS" '
        BEGIN { n = split(base, b, "\n"); for (i = 1; i <= n; i++) { split(b[i], f, " "); r0[f[1]] = f[2] } }
        {
            d = $3 - r0[$1]
            if (now == "" && ($2 == "failed" || $2 == "inactive"))
                now = "unit " $1 " is " $2 " (systemd will not start it again by itself)"
            else if (now == "" && d >= loop)
                now = "unit " $1 " crashes: systemd restarted it " d " times on its own since the deploy restarted it"
            if (first != "") next
            if ($2 != "active") first = "unit " $1 " is " $2
            else if (d != 0) first = "unit " $1 " restarted " d " time(s) (it crashes)"
            else if ($4 < stable) first = "unit " $1 " is up for only " $4 "ms"
        }
        END { if (now != "") print "at once: " now; else if (first != "") print first }'
}

# Put back what current was before the switch, restart, and check it.
step_restore() {
    local prev=$1 units=$2
    switch_to "$prev" || fail "could not switch current back to $prev on $(hostname)"
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
    # An unverified current (its job died after the switch) is never what a failure goes back to.
    if [ -n "$base" ] && [ "$base" != "$(current_release "$root")" ]; then prev=$C_RELEASES/$base; fi
    setv previous "$prev"
    # What a SIGTERM needs to know (on_term).
    activating=$target
    activated_from=$prev
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
    restoring=yes
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

# --- env files (mode env) ---------------------------------------------------------------------

# `env push` and `env rollback`, under the lock: the env file of opt_env is kept as a backup and
# replaced (push: by the bytes `envstage` left beside it; rollback: by its newest backup), the
# units that read it (opt_restart) restart and are checked like a deploy's. If they are not
# healthy, the file before goes back, they restart and are checked again (env-restored). The
# file's values never reach an event, a log or the job's directory: only its name does.
job_env() {
    local file
    file=$root/$(env_rel "$opt_env")
    env_change "$file" "$file$C_ENV_STAGED$token"
}

# What an env job leaves, on every way out (job_record): the staged file gone, the backups pruned.
env_cleanup() {
    local file
    file=$root/$(env_rel "$opt_env")
    rm -f -- "$file$C_ENV_STAGED$token"
    prune_env_backups "$file"
}

env_change() { # FILE STAGED
    local file=$1 src=$2 backup why
    if [ "$opt_env_action" = push ]; then
        emit phase awaiting-upload
        if ! await_msg uploaded; then
            finish_with "$stop_result" "$stop_reason; stopped before it changed anything"
            return
        fi
        if [ ! -f "$src" ] || [ -L "$src" ]; then
            finish_with failed "the new env file did not arrive on $(hostname); nothing was changed"
            return
        fi
    else
        src=$(env_backups "$file" | tail -n 1)
        if [ -z "$src" ]; then
            finish_with refused "there is no backup of $file on $(hostname) to go back to (env push makes one); nothing was changed"
            return
        fi
    fi
    # The last moment the deployer can stop it: nothing is changed yet.
    if stop_asked; then
        finish_with "$stop_result" "$stop_reason; stopped before it changed anything"
        return
    fi
    backup=$file$C_ENV_BACKUP$(date -u +"$C_NAME_DATE_FORMAT")
    setv env_backup "${backup##*/}"
    if ! run_step env-write "keep ${file##*/} as ${backup##*/}; put the new one in place" step_env_write "$file" "$src" "$backup"; then
        finish_with failed "$step_error; the env file is unchanged"
        return
    fi
    env_written=$backup
    # shellcheck disable=SC2086 # validated unit names
    if run_step restart "restart ${opt_restart//,/, }" step_restart ${opt_restart//,/ } &&
        run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"; then
        env_written=""
        finish_with env-pushed ""
        return
    fi
    why=$step_error
    restoring=yes
    if run_step restore "put back ${backup##*/}, restart ${opt_restart//,/, }" step_env_back "$file" "$backup"; then
        finish_with env-restored "with the new env file: $why; the file before it ($(basename -- "$backup")) is back and healthy"
    else
        finish_with failed "with the new env file: $why; then putting back ${backup##*/} failed: $step_error"
    fi
    env_written=""
}

# copy SRC DEST: SRC's bytes as DEST, written whole (0600 temporary beside it, flushed, renamed).
env_copy() { # SRC DEST
    local tmp=$2.tmp.$$
    umask 077
    rm -f -- "$tmp"
    if cp -- "$1" "$tmp" && chmod 600 -- "$tmp" && sync -- "$tmp" && mv -fT -- "$tmp" "$2"; then
        sync -f -- "$2" 2>/dev/null || true
        return 0
    fi
    rm -f -- "$tmp"
    return 1
}

step_env_write() { # FILE SRC BACKUP
    local file=$1 src=$2 backup=$3
    { [ -f "$file" ] && [ ! -L "$file" ]; } || fail "env file $file on $(hostname) is not a plain file: nothing was changed"
    { [ ! -e "$backup" ] && [ ! -L "$backup" ]; } ||
        fail "$backup exists already on $(hostname) (two env changes within one second): run the command again"
    env_copy "$file" "$backup" 2>>"$toollog" || fail "could not keep $file as $backup on $(hostname) (see $toollog; is the disk full?)"
    env_copy "$src" "$file" 2>>"$toollog" || fail "could not write $file on $(hostname) (see $toollog; is the disk full?)"
}

# Put BACKUP back as FILE, restart the units, check them.
step_env_back() { # FILE BACKUP
    env_copy "$2" "$1" 2>>"$toollog" || fail "could not write $1 from $2 on $(hostname)"
    # shellcheck disable=SC2086 # validated unit names
    step_restart ${opt_restart//,/ }
    step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"
}

# --- the job ---------------------------------------------------------------------------------

job_deploy() {
    pick_base
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
    if [ "$opt_maintenance" = yes ] &&
        ! run_step maintenance-on "maintenance on (nginx answers 503)" step_maintenance; then
        finish_with failed "$step_error; current was not touched"
        return
    fi
    if [ "$opt_scope" != frontend ] && [ "$opt_role" = primary ]; then
        snapshot_before_migration || return
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
    pick_base
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
        yes)
            [ "$opt_migrate_down" != yes ] ||
                emit info "the database is at $rev, which $opt_target's migrations know: nothing to take down"
            ;;
        no)
            if [ "$opt_migrate_down" = yes ] && [ "$opt_role" = primary ]; then
                if ! run_step trial "check the downgrade (a trial, rolled back)" step_trial "$rev"; then
                    finish_with refused "$step_error; nothing was changed: current and the database (at $rev) are as they were"
                    return
                fi
                [ -z "$(getv down_writer)" ] || migrate_down=yes
            elif [ "$opt_migrate_down" = yes ]; then
                emit info "the database is at $rev, which $opt_target does not know: the primary takes it down once every host switched"
            elif [ "$opt_force" != yes ]; then
                finish_with refused "the database is at alembic revision $rev, which release $opt_target does not know (a newer release migrated it): rerun with --migrate-down to take it down to $opt_target's migrations after the switch (a snapshot of the database is taken first), or with --force to run $opt_target on the newer schema as it is"
                return
            else
                emit warn "the database is at $rev, which $opt_target does not know: continuing because of --force"
            fi
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
    if [ "$result" = success ] && [ "$migrate_down" = yes ]; then migrate_down_after; fi
}

# rollback --migrate-down, on the primary, under the lock before the switch: what the downgrade
# will do (data it drops needs --yes), then a trial of it (run in its transaction, rolled back),
# so that one that raises is refused before anything changed. Saves v.down_writer (whose
# scripts) and v.down_to (the target's head) for after the switch.
step_trial() { # REVISION
    local rows drops
    down_facts "$root" "$opt_target" "$1"
    [ "$down_state" != error ] || fail "$down_why"
    if [ "$down_state" = none ]; then
        emit info "$down_why"
        return 0
    fi
    deploytool "$root/$C_RELEASES/$down_writer/backend" downgrade-plan "$down_to" || fail "$tool_error"
    rows=$(tool_value rows)
    if [ "${rows:-0}" != 0 ] && [ "$opt_yes" != yes ]; then
        drops=$(printf '%s\n' "$tool_out" | sed -n 's/^drop=//p' |
            awk '$2 ~ /^[0-9]+$/ && $2 > 0 { printf "%s%s %s (%s rows)", s, $3, $4, $2; s = ", " }')
        fail "the downgrade to $down_to drops $rows row(s) that hold data ($drops) and --yes was not given"
    fi
    if ! deploytool "$root/$C_RELEASES/$down_writer/backend" downgrade-trial "$down_to"; then
        emit_details "$toollog" 20
        fail "a trial of the downgrade failed: $tool_error"
    fi
    setv down_writer "$down_writer"
    setv down_to "$down_to"
    emit note migrate trial "$down_to" "$down_writer"
}

# rollback --migrate-down, after the switch (in a fleet: once every host switched and the fleet
# committed): a snapshot, the downgrade in one transaction, the health checks again. What fails
# leaves the target release serving; the line says what the database is and what helps.
migrate_down_after() {
    local to writer
    to=$(getv down_to)
    writer=$(getv down_writer)
    downgrading=yes
    result=""
    if [ "$opt_db_snapshot" != off ] && ! run_step snapshot "snapshot the database" step_snapshot; then
        finish_with failed "$opt_target serves, but the database was not taken down: $step_error; it stays at $(getv revision), which $opt_target runs on (a code-only rollback)"
        return
    fi
    if ! run_step migrate "migrate the database down to $to" step_migrate_down "$writer" "$to"; then
        finish_with failed "$opt_target serves, but the database was not taken down: $step_error; $opt_target runs on it as it is (a code-only rollback)"
        return
    fi
    if ! run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe" "$(getv probe_mode strict)"; then
        finish_with failed "the database was taken down to $to, and then $opt_target failed its health checks: $step_error; the data from before the downgrade is in the snapshot $(getv snapshot "(none: $C_DB_SNAPSHOT_ENV=off)")"
        return
    fi
    finish_with success ""
}

step_migrate_down() { # WRITER TO
    [ "$opt_db_snapshot" != off ] || emit note snapshot off
    if ! deploytool "$root/$C_RELEASES/$1/backend" downgrade "$2"; then
        emit_details "$toollog" 30
        fail "$tool_error (log: $toollog)"
    fi
    setv revision "$(tool_value db_revision)"
    emit note migrate "$(tool_value action)" "$(getv revision)"
}

# --- restore (`cargo xtask db restore`) -------------------------------------------------------

# The database replaced by a snapshot, on one host (the primary): verify the snapshot under the
# lock (refused, nothing stopped, when it is not whole or its release cannot run it); stop the
# units and their sockets (no request starts them again meanwhile); load it in one transaction
# (it completes or leaves the old data); switch current to the snapshot's release; start the
# units and their sockets; health. A failure before the load committed starts the units again
# on current (the database unchanged); after it, the job says what is where and stops there.
#
# In a fleet (begin=no) the client orders the hosts: `begin` to the primary, which verifies and
# then waits for `go`; `begin` to the others, which stop their units and wait for `go`; `go` to
# the primary, which stops, loads, switches and starts; then `go` to the others (they switch
# and start) once it restored, or an abort (they start again on their current).
job_restore() {
    local prev units=${opt_restart//,/ } rev
    pick_base
    prev=$(current_release "$root")
    if [ "$opt_begin" != yes ]; then
        emit phase awaiting-begin
        if ! await_msg begin; then
            finish_with "$stop_result" "$stop_reason; stopped before it changed anything"
            return
        fi
    fi
    if [ "$opt_role" != primary ]; then
        restore_follow "$prev"
        return
    fi
    if ! run_step verify-snapshot "verify the snapshot $opt_snapshot" step_verify; then
        finish_with refused "$step_error; nothing was stopped"
        return
    fi
    rev=$(getv revision -)
    if [ "$opt_begin" != yes ]; then
        # The other hosts stop their units now; `go` says they did.
        emit phase awaiting-go
        if ! await_msg go; then
            finish_with "$stop_result" "$stop_reason; nothing was stopped"
            return
        fi
    fi
    restore_at=stopping
    # shellcheck disable=SC2086 # validated unit names
    if ! run_step stop-units "stop ${opt_restart//,/, } and their sockets" step_units stop $units; then
        restart_after_stop "$step_error" "$prev"
        return
    fi
    restore_at=loading
    if ! run_step load-snapshot "restore the database from $opt_snapshot" step_load; then
        restart_after_stop "$step_error" "$prev"
        return
    fi
    restore_at=loaded
    if ! run_step switch "switch current -> $opt_target" step_switch "$opt_target"; then
        finish_with failed "the database holds snapshot $opt_snapshot (revision $rev) but $step_error; current is still ${prev:-none} and the units are stopped: 'cargo xtask deploy rollback $opt_target --force' puts the snapshot's release on it"
        return
    fi
    restore_at=starting
    # shellcheck disable=SC2086 # validated unit names
    if run_step restart "start ${opt_restart//,/, } and their sockets" step_units start $units &&
        run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"; then
        finish_with restored ""
        return
    fi
    finish_with failed "the database holds snapshot $opt_snapshot (revision $rev) and current is $opt_target, but it does not come up: $step_error; the data from before the restore is not kept (it was replaced in the load): 'cargo xtask logs' shows why"
}

# A host of a fleet that is not the primary: stop its units (no request of its own reaches the
# database while the primary replaces it), wait for `go` (the primary restored: switch to the
# snapshot's release, start, health) or an abort (start again on current).
restore_follow() { # CURRENT
    restore_at=stopping
    # shellcheck disable=SC2086 # validated unit names
    if ! run_step stop-units "stop ${opt_restart//,/, } and their sockets" step_units stop ${opt_restart//,/ }; then
        restart_after_stop "$step_error" "$1"
        return
    fi
    restore_at=waiting
    emit phase awaiting-go
    if ! await_msg go; then
        restore_at=restarting
        # shellcheck disable=SC2086 # validated unit names
        if run_step restart "start ${opt_restart//,/, } again on ${1:-current}" step_units start ${opt_restart//,/ } &&
            run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"; then
            finish_with "$stop_result" "$stop_reason; the units run again on ${1:-current}"
        else
            finish_with "$stop_result" "$stop_reason; starting the units again on ${1:-current} failed: $step_error"
        fi
        return
    fi
    restore_at=loaded
    if ! run_step switch "switch current -> $opt_target" step_switch "$opt_target"; then
        finish_with failed "the primary restored snapshot $opt_snapshot, but $step_error; current is still ${1:-none} and the units are stopped: 'cargo xtask deploy rollback $opt_target --force' puts the snapshot's release on it"
        return
    fi
    restore_at=starting
    # shellcheck disable=SC2086 # validated unit names
    if run_step restart "start ${opt_restart//,/, } and their sockets" step_units start ${opt_restart//,/ } &&
        run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"; then
        finish_with restored ""
        return
    fi
    finish_with failed "the primary restored snapshot $opt_snapshot and current is $opt_target here, but it does not come up: $step_error: 'cargo xtask logs' shows why"
}

# After a failure between the stop and the load's commit: the database is unchanged; start the
# units on current again.
restart_after_stop() { # WHY CURRENT
    local why=$1
    restore_at=restarting
    case "$why" in *"the database is unchanged"*) ;; *) why="$why; the database is unchanged" ;; esac
    # shellcheck disable=SC2086 # validated unit names
    if run_step restart "start ${opt_restart//,/, } again on ${2:-current}" step_units start ${opt_restart//,/ } &&
        run_step health "health checks" step_health "$opt_timeout" "$opt_stable_ms" "$opt_check" "$opt_probe"; then
        finish_with failed "$why; the units run again on ${2:-current}"
    else
        finish_with failed "$why, but starting the units again on ${2:-current} failed: $step_error: 'cargo xtask deploy status' shows them"
    fi
}

# The snapshot, checked under the lock: its dump and record are files (not links) in
# C_DB_SNAPSHOTS, the record names the target release, the dump's sha256 is the recorded one
# (a truncated or changed dump is refused), the target's migrations know its revision, and the
# PostgreSQL client is there. The revision goes into v.revision.
step_verify() {
    local dir=$root/$C_DB_SNAPSHOTS name=$opt_snapshot rec dump want sum rev of
    rec=$dir/$name$C_DB_RECORD
    dump=$dir/$name$C_DB_DUMP
    { [ ! -L "$dir" ] && [ -f "$rec" ] && [ ! -L "$rec" ] && [ -f "$dump" ] && [ ! -L "$dump" ]; } ||
        fail "snapshot $name does not exist on $(hostname) (no $dump with its record): 'cargo xtask db snapshots' lists them"
    of=$(meta "$rec" release)
    [ "$of" = "$opt_target" ] ||
        fail "the record of snapshot $name on $(hostname) names release $of, not $opt_target"
    want=$(meta "$rec" sha256)
    sum=$(sha256sum "$dump" | cut -d' ' -f1)
    [ "$sum" = "$want" ] ||
        fail "snapshot $name on $(hostname) is damaged: its sha256 is $sum, its record says $want (truncated or changed since it was taken, $(stat -c %s "$dump") bytes, recorded $(meta "$rec" size)): it cannot be restored"
    rev=$(meta "$rec" revision)
    case "$rev" in '' | *[!A-Za-z0-9_]*) fail "the record of snapshot $name on $(hostname) holds no plain revision ('$rev')" ;; esac
    release_revisions "$root/$C_RELEASES/$opt_target/backend" | grep -qx -- "$rev" ||
        fail "snapshot $name holds alembic revision $rev, which release $opt_target (the release that ran on it) does not know on $(hostname): no kept release can run it"
    { command -v psql && command -v pg_restore; } >/dev/null ||
        fail "psql or pg_restore is missing on $(hostname): run cargo xtask setup-server (it installs postgresql-client)"
    setv revision "$rev"
}

# step_units stop|start UNIT...: each unit with its socket, through the sudoers drop-in (one exact
# line each). Start clears the failed state and start counter first, and notes each unit's
# restart count for health, as step_restart does.
step_units() {
    local verb=$1 u failed=""
    shift
    for u in "$@"; do
        # shellcheck disable=SC2024,SC2046 # our output; the unit and its socket: validated words
        if [ "$verb" = start ]; then
            sudo -n /usr/bin/systemctl reset-failed $(reset_targets "$u") </dev/null >"$jobdir/$verb.$u" 2>&1 &&
                sudo -n /usr/bin/systemctl start $(reset_targets "$u") </dev/null >>"$jobdir/$verb.$u" 2>&1 &&
                restart_count "$u" >"$jobdir/base.$u" ||
                failed="$failed$u: $(one_line "$(cat "$jobdir/$verb.$u")" 300); "
        else
            sudo -n /usr/bin/systemctl stop $(reset_targets "$u") </dev/null >"$jobdir/$verb.$u" 2>&1 ||
                failed="$failed$u: $(one_line "$(cat "$jobdir/$verb.$u")" 300); "
        fi
    done
    [ -z "$failed" ] || fail "$verb failed on $(hostname): ${failed%; }"
}

# The load: one psql session reads BEGIN, the drop and re-creation of the schema `public` (so
# tables made since the snapshot go too, and the snapshot's foreign keys load in any order), the
# snapshot as SQL (pg_restore --no-owner: every object the app user's), then COMMIT, written
# only when pg_restore read the whole dump. A pg_restore that fails leaves psql without COMMIT:
# its session ends and PostgreSQL rolls the transaction back; an SQL error stops psql
# (ON_ERROR_STOP) and rolls back too. The connection and password as for the snapshot.
step_load() {
    local host port user dbname v dump=$root/$C_DB_SNAPSHOTS/$opt_snapshot$C_DB_DUMP st load_pid
    load_pgpass=$jobdir/pgpass
    trap 'rm -f -- "$load_pgpass"' EXIT
    deploytool "$root/$C_RELEASES/$opt_target/backend" snapshot-info ||
        fail "cannot restore the database on $(hostname): $tool_error; the database is unchanged"
    host=$(tool_value host)
    port=$(tool_value port)
    user=$(tool_value user)
    dbname=$(tool_value database)
    for v in "$host" "$port" "$user" "$dbname"; do
        case "$v" in '' | -* | *[!A-Za-z0-9._:-]*) fail "the database's connection facts on $(hostname) are not plain words ('$v', from DATABASE_URL); the database is unchanged" ;; esac
    done
    rm -f "$load_pgpass"
    deploytool "$root/$C_RELEASES/$opt_target/backend" pgpass "$load_pgpass" ||
        fail "could not write the password file for psql on $(hostname): $tool_error; the database is unchanged"
    # In the background, so that a SIGTERM (the job's on_term) stops psql before its COMMIT
    # (PostgreSQL then rolls back) instead of leaving it to finish alone.
    (if {
        printf '%s\n' 'BEGIN;' "SET LOCAL lock_timeout = '30s';" 'DROP SCHEMA public CASCADE;' \
            'CREATE SCHEMA public;' 'ALTER SCHEMA public OWNER TO pg_database_owner;' \
            'GRANT USAGE ON SCHEMA public TO PUBLIC;'
        pg_restore --no-owner --no-acl --file=- "$dump" 2>"$jobdir/pg_restore.err" || exit 1
        printf '%s\n' 'COMMIT;'
    } | PGPASSFILE=$load_pgpass PGCONNECT_TIMEOUT=10 psql -X -q -v ON_ERROR_STOP=1 --no-password \
        "--host=$host" "--port=$port" "--username=$user" "--dbname=$dbname" >"$jobdir/psql.out" 2>"$jobdir/psql.err"; then
        echo "0 0"
    else
        echo "${PIPESTATUS[*]}"
    fi >"$jobdir/load.status") &
    load_pid=$!
    trap 'pkill -TERM -P "$load_pid" 2>/dev/null; kill -TERM "$load_pid" 2>/dev/null; exit 143' TERM
    wait "$load_pid" || true
    read -r -a st <"$jobdir/load.status" || st=(1 1)
    rm -f "$load_pgpass"
    if [ "${st[0]}" != 0 ]; then
        emit_details "$jobdir/pg_restore.err" 10
        fail "pg_restore could not read $dump on $(hostname) ($(one_line "$(tail -n 1 "$jobdir/pg_restore.err")" 300)): nothing was committed, the database is unchanged"
    fi
    if [ "${st[1]}" != 0 ]; then
        emit_details "$jobdir/psql.err" 10
        fail "the restore into $dbname at $host:$port failed on $(hostname) (psql exit ${st[1]}: $(one_line "$(grep -m1 ERROR "$jobdir/psql.err" || tail -n 1 "$jobdir/psql.err")" 300)): it was rolled back, the database is unchanged"
    fi
}

# SIGTERM (a shutdown stops every process of the session; `deploy unlock --force` sends it
# too): before the switch the job stops like an abort; after it, current goes back to the
# release before (one rename, flushed; not restarted: the units start it at boot).
on_term() {
    local cur why="stopped by SIGTERM (a shutdown?)" from=${activated_from#"$C_RELEASES"/}
    trap '' TERM
    if [ -n "$step_pid" ]; then kill -TERM "$step_pid" 2>/dev/null || true; fi
    [ -z "$result" ] || exit 143
    if [ -n "$downgrading" ]; then
        finish_with interrupted "$why after the switch to $activating, while taking the database down: current stays on $activating (it runs on the newer schema too); the database is at $(revision_now "$root")"
        exit 143
    fi
    if [ "$opt_mode" = restore ] && [ -n "$restore_at" ]; then
        restore_stopped "$why"
        exit 143
    fi
    if [ "$opt_mode" = env ]; then
        if [ -z "$env_written" ]; then
            finish_with interrupted "$why; the env file is unchanged"
        elif env_copy "$env_written" "$root/$(env_rel "$opt_env")"; then
            finish_with interrupted "$why after the new env file was written: the file before it (${env_written##*/}) was put back (the units were not restarted: they start with it at boot)"
        else
            finish_with interrupted "$why after the new env file was written, and putting ${env_written##*/} back failed: 'cargo xtask env rollback $opt_env' puts it back"
        fi
        exit 143
    fi
    cur=$(current_link "$root")
    if [ -z "$activating" ] || [ "$activated_from" = "$C_RELEASES/$activating" ]; then
        finish_with interrupted "$why before the switch; current was not touched"
    elif [ "$cur" != "$C_RELEASES/$activating" ] && [ -z "$restoring" ]; then
        finish_with interrupted "$why before the switch; current was not touched"
    elif [ "$cur" != "$C_RELEASES/$activating" ]; then
        finish_with interrupted "$why while going back: current is ${cur:-removed (there was no release before)} (not restarted: the units start it at boot)"
    elif [ -z "$activated_from" ]; then
        finish_with interrupted "$why after the switch to $activating, with no release before it: current stays on it; at boot the release check puts back the newest $C_STATE_SUCCEEDED, intact release if there is one"
    elif switch_to "$activated_from"; then
        finish_with interrupted "$why after the switch: current was put back to $from and flushed (not restarted: the units start it at boot)"
    else
        finish_with interrupted "$why after the switch, and putting current back to $from failed: current is $activating; at boot the release check puts back the newest $C_STATE_SUCCEEDED, intact release"
    fi
    exit 143
}

# A SIGTERM during a restore, once it stopped the units: before the load's COMMIT the database
# is unchanged (psql was stopped: PostgreSQL rolls back) and the units are started again on
# current (in a shutdown that start fails, and boot starts them); after it, the database holds
# the snapshot and the record says where current and the units are.
restore_stopped() { # WHY
    local cur units=${opt_restart//,/ } started=no
    cur=$(current_release "$root")
    case "$restore_at" in
        stopping | loading | loaded | waiting)
            # shellcheck disable=SC2086 # validated unit names
            (step_units start $units) >/dev/null 2>&1 && started=yes
            ;;
    esac
    case "$restore_at:$started" in
        stopping:yes | loading:yes)
            finish_with interrupted "$1 during the restore, before its COMMIT: the database is unchanged; the units were started again on ${cur:-current}"
            ;;
        stopping:no | loading:no)
            finish_with interrupted "$1 during the restore, before its COMMIT: the database is unchanged; current is ${cur:-none} and its units are stopped (boot starts them; 'cargo xtask deploy status' shows them)"
            ;;
        waiting:*)
            finish_with interrupted "$1 while the primary restores: current is ${cur:-none} here, its units $([ "$started" = yes ] && echo "started again" || echo "stopped (boot starts them)"); the database is as the primary leaves it"
            ;;
        loaded:*)
            finish_with interrupted "$1 after the restore's COMMIT: the database holds snapshot $opt_snapshot; current is ${cur:-none} ($([ "$started" = yes ] && echo "its units started again" || echo "its units stopped: boot starts them")); 'cargo xtask deploy rollback $opt_target --force' puts the snapshot's release on it"
            ;;
        *)
            finish_with interrupted "$1 during the restore, after the units were started again: the database holds $([ "${restore_at}" = restarting ] && echo "what it held before" || echo "snapshot $opt_snapshot"); current is ${cur:-none}"
            ;;
    esac
}

# job root=ROOT token=TOKEN: the detached job; its plan is the lock's plan file.
sub_job() {
    parse_opts job "$@"
    check_root "$opt_root"
    check_token "$opt_token"
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
    # The lock's flock, taken by run before the lock became visible, comes on fd 8.
    flock -n 8 2>/dev/null || exit 1
    exec 6<>"$lock/fifo"
    # Its boot, then its pid: a pid says whether the job runs only in the boot it was taken in.
    boot_id >"$jobdir/boot" 2>/dev/null || true
    printf '%s\n' "$$" >"$jobdir/pid"
    # The plan was validated by run; read it back the same way.
    local kv
    while IFS= read -r kv; do parse_opts plan "$kv"; done <"$lock/plan"
    rel=$root/$C_RELEASES/${opt_release:-none}
    # shellcheck disable=SC2034 # reason and made_release are read by job_record (deploy-record.sh)
    result="" reason="" made_release="" base="" env_written="" step_pid="" step_stopped="" activating="" activated_from="" restoring="" downgrading="" migrate_down="" restore_at=""
    trap job_record EXIT
    trap 'job_line=$LINENO' ERR
    trap '' HUP INT
    trap on_term TERM
    emit started "$opt_mode" "${opt_release:-$opt_target}" "$(hostname)"
    case "$opt_mode" in
        rollback) job_rollback ;;
        restore) job_restore ;;
        env) job_env ;;
        *) job_deploy ;;
    esac
}
