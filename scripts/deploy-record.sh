# shellcheck shell=bash
# The end of a server job (see deploy-job.sh) and of a dead one: record the outcome, prune,
# release the lock.
#   - job_record: the job's own record (its EXIT trap): the release's state, the job's result
#     file and its deploy.log line, each whole or not at all; what cannot be written (a full
#     disk) stays in the lock (mark_unrecorded) for the next job, and the follower tells the
#     deployer from there (say_unrecorded);
#   - settle_dead: what a dead job left, recorded by the deploy or rollback that takes its lock
#     over (or by `deploy unlock`), with one line for the user.

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-job.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-job.sh"
fi

# --- the job's own record ---------------------------------------------------------------------

# Prune what the client chose (validated again here: never current, never this release) with the
# snapshots of the data each ran on, the job directories, virtualenvs no release uses, and assets
# no recent release serves. A pruned release is only moved into the trash here (one rename);
# empty_trash deletes it once the lock is released, so the deploy's result does not wait for the
# deletion (a snapshot is one file: it is removed at once).
prune_all() {
    local name cur keep_assets f r n snapshots=0 pruned=()
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
            # The snapshots of the data it ran on go with it.
            n=$(prune_snapshots "$root" "$name")
            [ "$n" = 0 ] || snapshots=$((snapshots + n))
        else
            emit warn "could not remove $root/$C_RELEASES/$name (see $toollog); it is left for later"
        fi
    done
    if [ "${#pruned[@]}" -gt 0 ]; then
        emit note pruned "${#pruned[@]}" "${pruned[0]}" "${pruned[-1]}"
    fi
    [ "$snapshots" = 0 ] || emit note pruned-snapshots "$snapshots"
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
        put "$root/$C_ASSETS/.history" "$(tail -n 200 "$root/$C_ASSETS/.history")" ||
            emit warn "could not trim $root/$C_ASSETS/.history ($put_error)"
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

# A release a dead job switched to and no job verified: failed once current left it.
settle_unverified() {
    local u
    u=$(getv unverified "")
    c_is_release "$u" && [ "$u" != "$(current_release "$root")" ] || return 0
    [ "$(state_of "$root/$C_RELEASES/$u")" = "$C_STATE_PREPARING" ] || return 0
    put "$root/$C_RELEASES/$u/$C_STATE_FILE" "$C_STATE_FAILED" ||
        emit warn "could not mark $u $C_STATE_FAILED ($put_error)"
}

# Always runs last (EXIT trap): record the outcome and release the lock. The record is the
# release's state, the job's result file and its deploy.log line, in that order, each whole or
# not at all; when one cannot be written (a full disk), the result stays in the lock
# (mark_unrecorded) and so does the lock, for the next deploy or rollback to record.
job_record() {
    local status=$? start revision duration current why=""
    set +e
    trap - ERR
    trap '' TERM
    if [ -z "${result:-}" ]; then
        result=failed
        reason="the deploy job stopped unexpectedly (exit $status${job_line:+, line $job_line}); current is $(current_link "$root")"
    fi
    [ "$opt_mode" != env ] || env_cleanup
    put "$lock/phase" record
    test_pause record
    start=$(now_ms)
    emit step record start "record the result and unlock"
    # deploy --maintenance: off again, whatever the result (only what this job turned on).
    if [ "${opt_maintenance:-}" = yes ] && [ "$(meta "$root/$C_MAINTENANCE_FLAG" token)" = "$token" ]; then
        if maint_off "$root" "$token"; then
            emit info "maintenance off: nginx serves the site again"
        else
            emit warn "could not turn maintenance off ($put_error): run cargo xtask maintenance off"
        fi
    fi
    revision=$(getv revision -)
    if [ "$opt_mode" = deploy ] && [ "${made_release:-}" = yes ] && [ -d "$rel" ]; then
        if [ "$result" = success ]; then
            put "$rel/$C_STATE_FILE" "$C_STATE_SUCCEEDED" || why=$put_error
        elif ! put "$rel/$C_STATE_FILE" "$C_STATE_FAILED"; then
            # A full disk: the partial upload goes first, so the state can be written.
            rm -rf "${rel:?}/backend" "${rel:?}/frontend"
            put "$rel/$C_STATE_FILE" "$C_STATE_FAILED" || why=$put_error
        fi
        set_meta "$rel/$C_META_FILE" alembic_revision "$revision" ||
            emit warn "could not note the database revision in $rel/$C_META_FILE ($put_error)"
    fi
    settle_unverified
    if [ "$result" = success ] && [ -z "$why" ] && ! install_scripts "$root" "$rel"; then
        emit warn "could not install the scripts of $opt_release into $root/$C_SCRIPTS ($put_error): the boot check runs the earlier ones"
    fi
    duration=$(secs_between "$opt_started_ms" "$(now_ms)")
    current=$(current_link "$root")
    if [ -z "$why" ] && ! write_result "$jobdir" "$result" "$reason" "$duration" "$revision" "$current"; then
        why=$put_error
    fi
    logged_line=""
    if [ -z "$why" ] && ! log_line "$root" "$opt_started" "$opt_deployer" "$opt_commit$([ "$opt_dirty" = yes ] && echo +dirty)" \
        "$(job_scope)" "$([ "$opt_mode" = deploy ] && echo "$opt_release" || echo "$opt_target")" \
        "$result" "$duration" "$revision" "$reason" "$(plan_marks)"; then
        why=$put_error
    fi
    if [ -n "$why" ]; then
        if mark_unrecorded "$result" "$duration" "$revision" "$(cause_of "$why")" "$reason"; then
            # What the follower tells the deployer comes from the lock (say_unrecorded).
            emit step record failed "$(secs_between "$start" "$(now_ms)")" "could not record the result ($why): it stays in $lock for the next deploy or rollback"
            exit
        fi
        emit warn "could not record the result ($why), nor keep it in $lock"
    fi
    if [ "$result" = success ]; then
        prune_all || emit warn "pruning stopped early (see $toollog)"
    fi
    emit step record ok "$(secs_between "$start" "$(now_ms)")"
    release_lock "$root" "$token" >/dev/null
    emit result "$result" "$reason" "$duration" "$revision" "$current" "$logged_line"
    emit phase "done"
    empty_trash
}

# What the job's plan changed of a usual deploy, as deploy.log words: `lint=allow-unsafe`
# (--allow-unsafe-migration let the migration lint's refusals through), `snapshot=off`
# (DEPLOY_DB_SNAPSHOT=off: no snapshot before a migration), `migrate=down` (a rollback asked to
# take the database down to its release's migrations), `from_snapshot=NAME` (a restore),
# `clean=yes` (deploy --clean: no seed, a fresh virtualenv from a fresh uv cache, fresh assets),
# `destination=NAME` (the deployer's destination: --to or DEPLOY_TO),
# `maintenance=yes` (deploy --maintenance: maintenance on for the migration, off in the record),
# `env=push|rollback backup=NAME` (env push or rollback: the backup of the file it replaced;
# never a value).
plan_marks() {
    local m=""
    [ -z "${opt_destination:-}" ] || m+="destination=$opt_destination "
    [ "$opt_mode" != env ] || m+="env=$opt_env_action backup=$(getv env_backup -) "
    [ "$opt_clean" != yes ] || m+="clean=yes "
    [ "$opt_allow_unsafe" != yes ] || m+="lint=allow-unsafe "
    [ "$opt_db_snapshot" != off ] || m+="snapshot=off "
    [ "$opt_migrate_down" != yes ] || m+="migrate=down "
    [ "${opt_maintenance:-}" != yes ] || m+="maintenance=yes "
    [ -z "${opt_snapshot:-}" ] || m+="from_snapshot=$opt_snapshot"
    printf '%s' "${m% }"
}

# --- a dead job's -----------------------------------------------------------------------------

# The database revision now: what the running API reports, else what current's tool reads.
revision_now() { # ROOT
    local rev
    rev=$(api_revision)
    if [ -z "$rev" ] && [ -x "$1/$C_CURRENT/backend/.venv/bin/python" ] &&
        deploytool "$1/$C_CURRENT/backend" revision; then
        rev=$(printf '%s\n' "$tool_out" | sed -n 's/^db_revision=//p')
    fi
    printf '%s' "${rev:-unreadable}"
}

# settle_dead ROOT DEADDIR BY: the lock moved aside to DEADDIR belonged to a job that is gone.
# Record what it left: the result it could not record (state, metadata, result file, its
# deploy.log line), or that it died (`interrupted`; its release, still being prepared, failed,
# unless current: then it stays unverified). Sets took_over (one line for the user) and
# unverified (current's release, which no job verified).
settle_dead() {
    local root=$1 dead=$2 by=$3 token release mode phase cur marker result reason rev dur
    local scope commit started relpath state when s0 s1 gone dest
    token=$(meta "$dead/info" token)
    release=$(meta "$dead/info" release)
    mode=$(meta "$dead/plan" mode)
    scope=$(meta "$dead/plan" scope)
    case "$mode" in
        rollback | restore) scope=$mode ;;
        env) scope=env-$(meta "$dead/plan" env) ;;
    esac
    commit=$(meta "$dead/info" commit)
    started=$(meta "$dead/info" started)
    when="$(meta "$dead/info" user)@$(meta "$dead/info" host)'s '$(meta "$dead/info" command)' ($token, since $started)"
    phase=$(head -c 64 "$dead/phase" 2>/dev/null || true)
    cur=$(current_release "$root")
    relpath=$root/$C_RELEASES/$release
    c_is_release "$release" && [ -d "$relpath" ] && [ ! -L "$relpath" ] || relpath=""
    case "$token" in '' | *[!A-Za-z0-9_-]*) token=- ;; esac
    # What a job killed during its snapshot left: pg_dump's password file and its partial dump.
    [ "$token" = - ] || rm -f -- "$root/$C_JOBS/$token/pgpass" "$root/$C_ENV_BACKEND$C_ENV_STAGED$token" \
        "$root/$C_ENV_FRONTEND$C_ENV_STAGED$token"
    # What a job killed with maintenance on left: the flag it set (deploy --maintenance).
    [ "$token" = - ] || maint_off "$root" "$token" || emit_later "could not turn off the maintenance its job turned on ($put_error)"
    if [ -d "$root/$C_DB_SNAPSHOTS" ] && [ ! -L "$root/$C_DB_SNAPSHOTS" ]; then
        find "$root/$C_DB_SNAPSHOTS" -maxdepth 1 -type f -name ".*$C_DB_DUMP.tmp.*" -delete 2>/dev/null || true
    fi
    if marker=$(unrecorded_marker "$dead"); then
        result=$(marker_field "$marker" result)
        in_list "$result" "$C_RESULTS" || result=failed
        reason=$(marker_field "$marker" reason)
        [ "$reason" != - ] || reason=""
        rev=$(marker_field "$marker" alembic)
        dur=$(marker_field "$marker" duration)
        if [ "$mode" = deploy ] && [ -n "$relpath" ] && [ "$(state_of "$relpath")" = "$C_STATE_PREPARING" ]; then
            state=$C_STATE_FAILED
            [ "$result" != success ] || state=$C_STATE_SUCCEEDED
            put "$relpath/$C_STATE_FILE" "$state" || emit_later "could not mark $release $state ($put_error)"
            set_meta "$relpath/$C_META_FILE" alembic_revision "$rev" || true
        fi
        if [ "$result" = success ] && [ -n "$relpath" ] && [ "$release" = "$cur" ]; then
            install_scripts "$root" "$relpath" || emit_later "could not install the scripts of $release into $root/$C_SCRIPTS ($put_error)"
        fi
        reason="${reason:+$reason; }recorded by $by: the job could not write it then ($(marker_field "$marker" why))"
        took_over="took over the lock of $when: its job ended $result but could not record it ($(marker_field "$marker" why)); recorded now"
    else
        result=interrupted
        if lock_rebooted "$dead"; then gone="the server rebooted since"; else gone="no process holds its lock"; fi
        reason="the job died at ${phase:-its start} ($gone)"
        rev=-
        if [ -n "$relpath" ] && [ "$release" = "$cur" ]; then
            reason+=", after the switch: current is its release $release"
            if [ "$mode" = deploy ] && [ "$(state_of "$relpath")" = "$C_STATE_PREPARING" ]; then
                reason+=", which no job verified"
                # shellcheck disable=SC2034 # the caller's (sub_run)
                unverified=$release
            fi
        elif [ -n "$relpath" ] && [ "$mode" = deploy ]; then
            state=$(state_of "$relpath")
            if [ "$state" != "$C_STATE_PREPARING" ]; then
                reason+="; its release $release is $state"
            elif put "$relpath/$C_STATE_FILE" "$C_STATE_FAILED"; then
                reason+="; its release $release is marked $C_STATE_FAILED"
            else
                reason+="; marking its release $release $C_STATE_FAILED failed ($put_error)"
            fi
        fi
        case "$phase" in
            migrate | awaiting-go | sync | switch | restart | health | restore | awaiting-verdict | record)
                if [ "$mode" = deploy ] && [ "$scope" != frontend ] && [ "$(meta "$dead/plan" role)" = primary ]; then
                    rev=$(revision_now "$root")
                    reason+="; its migration had started: the database is at $rev now"
                fi
                ;;
        esac
        # shellcheck disable=SC2034 # the caller's (sub_run)
        took_over="took over the lock of $when: $reason"
        reason+="; taken over by $by"
    fi
    # How long it ran: from its start to its last step (the phase file's time).
    s0=$(meta "$dead/plan" started_ms)
    s1=$(stat -c %Y "$dead/phase" 2>/dev/null || echo 0)
    case "$s0" in '' | *[!0-9]*) s0=0 ;; esac
    if [ "${dur:--}" = - ]; then
        dur=0.0
        [ "$s0" = 0 ] || [ "$s1" -lt "$((s0 / 1000))" ] || dur=$((s1 - s0 / 1000)).0
    fi
    if [ "$token" != - ] && [ -d "$root/$C_JOBS/$token" ] && [ ! -f "$root/$C_JOBS/$token/result" ]; then
        write_result "$root/$C_JOBS/$token" "$result" "$reason" "$dur" "$rev" "$(current_link "$root")" || true
    fi
    dest=$(meta "$dead/plan" destination)
    log_line "$root" "${started:--}" "$(meta "$dead/plan" deployer)" "$commit" "$scope" "$release" \
        "$result" "$dur" "$rev" "$reason" "${dest:+destination=$(word_of "$dest" 32)}" || emit_later "could not append to $root/$C_LOG ($put_error)"
}

# A warning about the takeover, given once the new job's events exist.
emit_later() { later_warnings+=("$1"); }

# A job's result left unrecorded in its lock, as `probe` reports a recorded one (job.* lines),
# and why it is not recorded (job.unrecorded).
unrecorded_result() { # ROOT TOKEN
    local lock marker
    lock=$(lock_dir "$1")
    [ "$(meta "$lock/info" token)" = "$2" ] || return 0
    marker=$(unrecorded_marker "$lock") || return 0
    out job.result "$(marker_field "$marker" result)"
    out job.reason "$(marker_field "$marker" reason | sed 's/^-$//')"
    out job.duration "$(marker_field "$marker" duration)"
    out job.revision "$(marker_field "$marker" alembic)"
    out job.current "$(current_link "$1")"
    out job.unrecorded "$(marker_field "$marker" why)"
}

# What a job left unrecorded in its (dead) lock, as the job would have said it: a warning and
# its result event (the follower prints them after the job's own events).
say_unrecorded() { # ROOT TOKEN
    local lock marker result what
    lock=$(lock_dir "$1")
    [ "$(meta "$lock/info" token)" = "$2" ] || return 0
    marker=$(unrecorded_marker "$lock") || return 0
    ! grep -q $'\tresult\t' "$1/$C_JOBS/$2/events" 2>/dev/null || return 0
    result=$(marker_field "$marker" result)
    if [ "$result" = success ]; then what="$C_STATE_SUCCEEDED"; else what="ended $result"; fi
    printf '%s\twarn\t%s\n' "$(now_ms)" "$(one_line "the $(meta "$lock/plan" mode) of $(meta "$lock/info" release) $what, but $(hostname) could not record it ($(marker_field "$marker" why)): free space under $1 there; the next deploy or rollback records it (until then 'deploy list' and the boot check count it as $what)")"
    printf '%s\tresult\t%s\t%s\t%s\t%s\t%s\n' "$(now_ms)" "$result" \
        "$(one_line "$(marker_field "$marker" reason | sed 's/^-$//')")" \
        "$(marker_field "$marker" duration)" "$(marker_field "$marker" alembic)" "$(current_link "$1")"
}
