#!/usr/bin/env bash
# Server side of `cargo xtask deploy`. Runs as the app user over the deployer's ssh connection:
#     bash -c "<contract.sh><deploy-lib.sh><deploy-job.sh><deploy.sh>" deploy.sh SUB key=value...
# It is also shipped in every release (releases/NAME/scripts/), next to the files it sources.
#
#   probe   read-only: current, releases, lock (and whether its job is alive), last job,
#           optionally the database revision and what each release adds on disk
#   run     preflight, take the lock (a dead job's lock is taken over, see deploy-lock.sh), check
#           that current is what the deployer planned against, start the detached job
#           (deploy-job.sh) and follow it: stream its events to stdout and pass the deployer's
#           messages (stdin, one per line) to it
#   follow  re-attach to a job's events (a deployer that reconnects, or `deploy status --follow`)
#   unlock  remove the lock that was shown (by token), never under a live job unless forced
#   log     the last lines of deploy.log
#   db      read-only, before the lock: the database's revision; with size=yes what a snapshot
#           before the migration needs (the database's size, the room under shared/db)
#   maintenance  maintenance mode on (the page, then the flag), off, or its state
#   envread read-only: an env file (hex) and the names of its backups (`env show`, `env diff`)
#   envstage under this job's lock: the new env file on stdin, staged beside the old one (`env push`)
#   job     the job itself (internal)
#
# Replies are key=value lines; a refusal prints one `error=...` line and exits non-zero.
# Every option is validated (deploy-lib.sh) before it is used: nothing is ever evaluated.
set -euo pipefail
umask 022

if [ -z "${C_APP_USER:-}" ]; then
    # Run from a release directory: the other parts sit beside this file.
    # shellcheck source=scripts/deploy-job.sh
    . "$(dirname -- "$0")/deploy-job.sh"
    # shellcheck source=scripts/deploy-record.sh
    . "$(dirname -- "$0")/deploy-record.sh"
fi

# How to start this script again (the detached job): the same text, or the same file.
if [ -n "${BASH_EXECUTION_STRING:-}" ]; then
    SELF=(bash -c "$BASH_EXECUTION_STRING" deploy.sh)
else
    SELF=(bash "$0")
fi

# --- probe -----------------------------------------------------------------------------------

sub_probe() {
    parse_opts probe "$@"
    check_root "$opt_root"
    local root=$opt_root cur status rel
    out now "$(now_s)"
    out host "$(hostname)"
    out role "$(host_role)"
    status=$(current_status "$root")
    out current.status "$status"
    out current.link "$(current_link "$root")"
    cur=$(current_release "$root")
    out current "$cur"
    if [ -n "$cur" ]; then
        rel=$root/$C_RELEASES/$cur
        out current.state "$(state_of "$rel")"
        out current.backend_commit "$(meta "$rel/$C_META_FILE" backend_commit)"
        out current.frontend_commit "$(meta "$rel/$C_META_FILE" frontend_commit)"
    fi
    restored_at_boot "$root" "$cur"
    list_releases "$root"
    list_snapshots "$root"
    lock_info "$root"
    last_job "$root"
    maint_info "$root"
    if [ "${opt_db:-no}" = yes ]; then
        probe_units
        out disk "$(df -Ph "$root" | awk 'NR==2 {print $4 " free of " $2 " (" $5 " used)"}')"
        probe_db "$root" "$cur"
    fi
    if [ "${opt_sizes:-no}" = yes ]; then
        local names
        names=$(release_names "$root")
        if [ -n "$names" ]; then
            # Oldest first: du counts a hard-linked file once, in the first release that has
            # it, so each figure is what that release adds.
            # shellcheck disable=SC2086 # release names are validated words
            (cd "$root/$C_RELEASES" && { du -sk $names 2>/dev/null || true; }) |
                while read -r kb name; do out size "$name $kb"; done
        fi
    fi
}

# current.restored: deploy.log's last line when it is the boot check's restored-at-boot of
# current (nothing was logged since: current is where the boot check put it; a command run
# in current, result=ran, changed nothing and does not count).
restored_at_boot() { # ROOT CURRENT
    local last
    [ -n "$2" ] && [ -f "$1/$C_LOG" ] || return 0
    last=$({ grep -v ' result=ran ' "$1/$C_LOG" || true; } | tail -n 1)
    case "$last" in *" release=$2 result=restored-at-boot "*) out current.restored "$last" ;; esac
}

# The role setup-server recorded on this host: a word of C_ROLES, `missing`, or `invalid: WHY`
# when the record is not root's plain file (in a directory of root's) of one such word.
host_role() {
    local f=$C_ROLE_FILE word
    if [ ! -e "$f" ] && [ ! -L "$f" ]; then
        echo missing
        return
    fi
    if [ -L "$f" ] || [ ! -f "$f" ] || [ "$(stat -c %u "$f")" != 0 ] ||
        [ "$(stat -c %u "$(dirname -- "$f")")" != 0 ] || [ -n "$(find "$f" -perm /022)" ]; then
        echo "invalid: $f is not a file only root can change"
        return
    fi
    word=$(head -c 64 "$f" | tr -cd '[:lower:]')
    if in_list "$word" "$C_ROLES"; then
        echo "$word"
    else
        echo "invalid: $f does not name a role"
    fi
}

probe_units() {
    local u
    for u in $C_UNITS; do
        out unit "$u $(systemctl show -p ActiveState --value "$u" 2>/dev/null || echo unknown) $(systemctl show -p NRestarts --value "$u" 2>/dev/null || echo 0) $(systemctl show -p UnitFileState --value "$u" 2>/dev/null || echo unknown)"
    done
}

# The database revision, through the running API, else with a release's own tool.
probe_db() { # ROOT CURRENT: also sets probed_rev ('' when unread)
    local rev dir toollog=/dev/null
    rev=$(api_revision)
    probed_rev=$rev
    if [ -n "$rev" ]; then
        out db.revision "$rev"
        out db.via api
        return
    fi
    dir=$1/$C_RELEASES/$2/backend
    if [ -z "$2" ] || [ ! -x "$dir/.venv/bin/python" ]; then
        out db.error "no current release to ask"
        return
    fi
    if deploytool "$dir" revision; then
        probed_rev=$(tool_value db_revision)
        out db.revision "$probed_rev"
        out db.known "$(printf '%s\n' "$tool_out" | sed -n 's/^known=//p')"
        out db.via release
    else
        out db.error "$tool_error"
    fi
}

last_job() { # ROOT: the newest job directory and its result
    local dir
    [ -d "$1/$C_JOBS" ] || return 0
    dir=$(find "$1/$C_JOBS" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | sed -n '1s/^[^ ]* //p')
    [ -n "$dir" ] || return 0
    out job.token "${dir##*/}"
    if [ -f "$dir/result" ]; then
        sed -n 's/^\([a-z_]*\)=\(.*\)$/job.\1=\2/p' "$dir/result"
    else
        unrecorded_result "$1" "${dir##*/}"
    fi
    out job.events "$(wc -c <"$dir/events" 2>/dev/null || echo 0)"
    # Its last events (for status), each line as the event stream has it.
    tail -n 8 "$dir/events" 2>/dev/null | sed 's/^/job.event=/'
}

# --- db ----------------------------------------------------------------------------------------

# The database as a deploy sees it before the lock (the deployer lints the migrations from its
# revision): db.revision (`-`: never migrated), or db.error; db.first when no release runs on
# this host yet (nothing here can read the revision: a first deploy). With size=yes, for the check that a
# snapshot fits: db.size (bytes, pg_database_size, through current's deploy tool) or
# db.size_error, db.server (host:port), db.free (bytes free where the snapshots go), db.kept
# (bytes the snapshots there take now) and db.same_disk (whether the releases share that disk).
sub_db() {
    parse_opts db "$@"
    check_root "$opt_root"
    check_one_of size "$opt_size" "yes no"
    [ -z "$opt_down" ] || check_release "$opt_down"
    local root=$opt_root cur dir toollog=/dev/null where probed_rev=""
    cur=$(current_release "$root")
    if [ -z "$cur" ]; then
        # No release runs here yet: nothing on this host can read the revision (a first deploy).
        out db.first yes
        return 0
    fi
    probe_db "$root" "$cur"
    [ -z "$opt_down" ] || down_plan "$root" "$opt_down" "$probed_rev"
    [ "$opt_size" = yes ] || return 0
    dir=$root/$C_RELEASES/$cur/backend
    if [ -z "$cur" ] || [ ! -x "$dir/.venv/bin/python" ]; then
        out db.size_error "no current release to ask"
    elif deploytool "$dir" snapshot-info; then
        out db.size "$(tool_value database_size)"
        out db.server "$(tool_value host):$(tool_value port)"
    else
        out db.size_error "$tool_error"
    fi
    # Where the snapshot will be written: shared/db, or the directory it will be made in.
    where=$root/$C_DB_SNAPSHOTS
    [ -d "$where" ] || where=${where%/*}
    out db.dir "$root/$C_DB_SNAPSHOTS"
    out db.free "$(df -P -B1 "$where" | awk 'NR==2 {print $4}')"
    if [ "$(stat -c %d "$where")" = "$(stat -c %d "$root/$C_RELEASES")" ]; then
        out db.same_disk yes
    else
        out db.same_disk no
    fi
    if [ -d "$root/$C_DB_SNAPSHOTS" ]; then
        out db.kept "$(du -sb "$root/$C_DB_SNAPSHOTS" 2>/dev/null | cut -f1)"
    else
        out db.kept 0
    fi
}

# With down=TARGET (`deploy rollback --migrate-down`): what taking the database down to TARGET's
# migrations would do, as down.* lines: down.none or down.error (why), else down.writer (whose
# scripts), down.to (TARGET's head) and its deploy tool's downgrade-plan (down.db_revision,
# down.step=REV FILE yes|empty|online, down.drop=REV ROWS table|column NAME, down.rows).
down_plan() { # ROOT TARGET REVISION
    if [ ! -d "$1/$C_RELEASES/$2" ] || [ -L "$1/$C_RELEASES/$2" ]; then
        out down.error "release $2 does not exist on $(hostname)"
        return 0
    fi
    if [ -z "$3" ]; then
        out down.error "the database's revision cannot be read (db.error)"
        return 0
    fi
    down_facts "$1" "$2" "$3"
    case "$down_state" in
        none) out down.none "$down_why" ;;
        error) out down.error "$down_why" ;;
        *)
            out down.writer "$down_writer"
            out down.to "$down_to"
            if deploytool "$1/$C_RELEASES/$down_writer/backend" downgrade-plan "$down_to"; then
                printf '%s\n' "$tool_out" | sed -n 's/^\([a-z_]*\)=/down.\1=/p'
            else
                out down.error "$tool_error"
            fi
            ;;
    esac
}

# --- preflight -------------------------------------------------------------------------------

# What is wrong with an env file, as one line with a fix that is safe to run ('' when fine).
env_problem() { # PATH FLAG
    local p=$1 flag=$2 me mode owner
    me=$(id -un)
    if [ -L "$p" ]; then
        echo "env file $p is a symlink (to $(readlink "$p")), not a file: remove the link (as $me: rm $p) and install the file with cargo xtask setup-server $flag FILE"
    elif [ -d "$p" ]; then
        echo "env file $p is a directory, not a file: move it away and install the file with cargo xtask setup-server $flag FILE"
    elif [ ! -e "$p" ]; then
        echo "env file $p is missing: install it with cargo xtask setup-server $flag FILE"
    elif [ ! -f "$p" ]; then
        echo "env file $p is not a regular file: replace it with cargo xtask setup-server $flag FILE --force-env"
    else
        owner=$(stat -c %U "$p")
        mode=$(stat -c %a "$p")
        if [ "$owner" != "$me" ]; then
            echo "env file $p is owned by $owner, expected $me: rerun cargo xtask setup-server (it repairs owner and mode)"
        elif [ "$mode" != 600 ]; then
            echo "env file $p has mode $mode, expected 600: as $me run chmod 600 $p (or rerun cargo xtask setup-server)"
        fi
    fi
}

# Everything a deploy needs, checked before any change; refuses with one line.
preflight() {
    local root=$opt_root me problem u load enabled free_mb units id path names=() role verb
    me=$(id -un)
    role=$(host_role)
    [ "$role" = "$opt_role" ] ||
        refuse "the role recorded on $(hostname) ($C_ROLE_FILE: $role) is not the $opt_role this $opt_mode was planned for (setup-server changed it meanwhile?): run the command again; 'cargo xtask deploy status' shows each host's role"
    { [ -w "$root" ] && [ -w "$root/$C_RELEASES" ]; } ||
        refuse "$me cannot write to $root/$C_RELEASES on $(hostname): run cargo xtask setup-server"
    problem=$(env_problem "$root/$C_ENV_BACKEND" --backend-env)
    [ -z "$problem" ] || refuse "$problem"
    problem=$(env_problem "$root/$C_ENV_FRONTEND" --frontend-env)
    [ -z "$problem" ] || refuse "$problem"
    units=${opt_restart//,/ }
    for u in $units; do
        sudo -n -l /usr/bin/systemctl restart "$u" >/dev/null 2>&1 ||
            refuse "sudo on $(hostname) does not let $me run 'systemctl restart $u' without a password: install the sudoers drop-in (cargo xtask setup-server) and check with 'sudo -n -l'"
        # shellcheck disable=SC2046 # the unit and its socket: validated words
        sudo -n -l /usr/bin/systemctl reset-failed $(reset_targets "$u") >/dev/null 2>&1 ||
            refuse "sudo on $(hostname) does not let $me run 'systemctl reset-failed $(reset_targets "$u")' (the sudoers drop-in of an older setup-server): run cargo xtask setup-server"
        # A restore stops the unit with its socket and starts both again.
        if [ "$opt_mode" = restore ]; then
            for verb in stop start; do
                # shellcheck disable=SC2046 # the unit and its socket: validated words
                sudo -n -l /usr/bin/systemctl "$verb" $(reset_targets "$u") >/dev/null 2>&1 ||
                    refuse "sudo on $(hostname) does not let $me run 'systemctl $verb $(reset_targets "$u")' (the sudoers drop-in of an older setup-server): run cargo xtask setup-server"
            done
        fi
    done
    for u in ${opt_check//,/ } $units; do
        in_list "$u.service" "${names[*]}" || names+=("$u.service")
        if in_list "$u" "$C_UNITS_WITH_SOCKET" && ! in_list "$u.socket" "${names[*]}"; then names+=("$u.socket"); fi
    done
    while read -r id load enabled path; do
        u=${id%.service}
        case "$id:$load:$enabled" in
            *:loaded:enabled | *:loaded:enabled-runtime | *:loaded:static | *:loaded:indirect | *.socket:loaded:*) ;;
            *:masked:* | *:*:masked*) refuse "unit $u is masked on $(hostname) (systemctl says LoadState=$load): unmask it as root (systemctl unmask $u) or rerun cargo xtask setup-server" ;;
            *:not-found:*) refuse "unit $u does not exist on $(hostname): install the units with cargo xtask setup-server" ;;
            *:loaded:disabled) refuse "unit $u is disabled on $(hostname): enable it as root (systemctl enable $u) or rerun cargo xtask setup-server" ;;
            *) refuse "unit $u is not usable on $(hostname) (LoadState=$load, UnitFileState=$enabled): rerun cargo xtask setup-server" ;;
        esac
        case "$path" in
            "$C_UNIT_DIR/$id") ;;
            "$C_OLD_UNIT_DIR/$id") refuse "unit $id on $(hostname) is installed in $C_OLD_UNIT_DIR, where an older setup-server put it (the units now live in $C_UNIT_DIR, so that systemctl mask works): run cargo xtask setup-server, which moves them" ;;
            *) refuse "unit $id on $(hostname) is loaded from $path, not from $C_UNIT_DIR where setup-server installs it: move $path away (a change of your own belongs in a drop-in, $path.d/) and run cargo xtask setup-server" ;;
        esac
    done < <(unit_files "${names[@]}")
    command -v curl >/dev/null || refuse "curl is missing on $(hostname): run cargo xtask setup-server"
    if [ "$opt_mode" = deploy ] && [ "$opt_scope" != frontend ]; then
        command -v uv >/dev/null || refuse "uv is missing on $(hostname): run cargo xtask setup-server"
    fi
    if [ "$opt_mode" = deploy ] && [ "$opt_scope" != backend ]; then
        [ -x /usr/local/bin/node ] || refuse "/usr/local/bin/node is missing on $(hostname): run cargo xtask setup-server"
    fi
    free_mb=$(df -Pm "$root/$C_RELEASES" | awk 'NR==2 {print $4}')
    [ "$free_mb" -ge "$opt_need_mb" ] ||
        refuse "only ${free_mb} MB free under $root/$C_RELEASES on $(hostname), and this upload needs about ${opt_need_mb} MB (its size plus room for a virtualenv): $(space_advice "$root" "$me")"
}

# unit_files UNIT...: `ID LOADSTATE UNITFILESTATE FRAGMENTPATH` for each (- for an empty
# value), from one systemctl call.
unit_files() {
    systemctl show -p Id -p LoadState -p UnitFileState -p FragmentPath -- "$@" 2>/dev/null |
        awk '
            function flush() {
                if (id != "") print id, (l == "" ? "-" : l), (e == "" ? "-" : e), (p == "" ? "-" : p)
                id = l = e = p = ""
            }
            /^$/ { flush(); next }
            /^Id=/ { id = substr($0, 4) }
            /^LoadState=/ { l = substr($0, 11) }
            /^UnitFileState=/ { e = substr($0, 15) }
            /^FragmentPath=/ { p = substr($0, 14) }
            END { flush() }' || true
}

# What can free space under the releases now: the failed and abandoned releases (never one a
# live deploy prepares), then the disk itself.
space_advice() { # ROOT USER
    local root=$1 me=$2 n live spare=()
    live=$(meta "$(lock_dir "$root")/info" release 2>/dev/null || true)
    for n in $(release_names "$root"); do
        [ "$n" != "$live" ] || continue
        case "$(state_of "$root/$C_RELEASES/$n")" in
            "$C_STATE_FAILED" | "$C_STATE_PREPARING") spare+=("$n") ;;
        esac
    done
    if ((${#spare[@]})); then
        printf 'remove the releases that failed or were abandoned (%s; as %s: cd %s/%s && rm -rf %s), free space elsewhere on that disk, or grow it' \
            "${spare[*]}" "$me" "$root" "$C_RELEASES" "${spare[*]}"
    else
        printf "free space elsewhere on that disk or grow it (no failed release to remove; 'cargo xtask deploy list' shows what each release adds, and DEPLOY_KEEP how many releases the next successful deploy keeps)"
    fi
}

# Refuse before anything changed: one line, and a deploy.log entry. It made no release, so its
# line names none (`-`): what it planned goes first in the reason (the same name as the
# winner's when two deploys planned in the same second).
refuse() {
    local planned="planned release ${opt_release:-}"
    [ "${opt_mode:-}" != rollback ] || planned="planned rollback to ${opt_target:-}"
    [ "${opt_mode:-}" != restore ] || planned="planned restore of ${opt_snapshot:-}"
    [ "${opt_mode:-}" != env ] || planned="planned env ${opt_env_action:-} of the ${opt_env:-} env file"
    log_line "$opt_root" "$(iso_now)" "${opt_deployer:-}" "${opt_commit:-}" \
        "$(job_scope)" - refused 0.0 - "$planned: $1" \
        "${opt_destination:+destination=$opt_destination}" 2>/dev/null || true
    die "$1"
}

# --- run -------------------------------------------------------------------------------------

validate_plan() {
    check_root "$opt_root"
    check_token "$opt_token"
    check_one_of mode "$opt_mode" "deploy rollback restore env"
    if [ "$opt_mode" = env ]; then
        check_one_of env "$opt_env" "backend frontend"
        check_one_of env_action "$opt_env_action" "push rollback"
    else
        [ -z "$opt_env$opt_env_action" ] || die "env and env_action are for mode env only"
    fi
    if [ "$opt_mode" = deploy ]; then
        check_release "$opt_release"
        check_one_of scope "$opt_scope" "all backend frontend"
    else
        check_release "$opt_target"
        check_one_of force "$opt_force" "yes no"
    fi
    if [ "$opt_mode" = restore ]; then
        # TARGET-REVISION: the snapshot of the target's data (it ends up in a path).
        [ "$(snapshot_name "$opt_target" "${opt_snapshot#"$opt_target"-}")" = "$opt_snapshot" ] ||
            die "snapshot must name a snapshot of the data of $opt_target (RELEASE-REVISION), not '$opt_snapshot'"
    else
        [ -z "$opt_snapshot" ] || die "snapshot is for mode restore only"
    fi
    case "$opt_expect_current" in
        -) ;;
        "$C_RELEASES"/*) check_release "${opt_expect_current#"$C_RELEASES"/}" ;;
        *) die "expect_current must be - or $C_RELEASES/NAME, not '$opt_expect_current'" ;;
    esac
    check_word deployer "$opt_deployer"
    check_word commit "$opt_commit"
    check_one_of dirty "$opt_dirty" "yes no"
    case "$opt_command" in '' | *[!A-Za-z0-9\ ._-]*) die "command has unexpected characters: '$opt_command'" ;; esac
    check_digits client_pid "$opt_client_pid"
    check_word client_host "$opt_client_host"
    check_units "$opt_restart"
    check_units "$opt_check"
    check_probes "$opt_probe"
    check_digits timeout "$opt_timeout"
    check_digits stable_ms "$opt_stable_ms"
    check_one_of role "$opt_role" "primary secondary"
    check_one_of verdict "$opt_verdict" "auto wait"
    check_one_of begin "$opt_begin" "yes no"
    check_digits need_mb "$opt_need_mb"
    check_names "$opt_prune"
    check_digits asset_grace "$opt_asset_grace"
    [ -z "$opt_pause_at" ] || check_one_of pause_at "$opt_pause_at" "$C_STEPS"
    [ -z "$opt_allow_unsafe" ] || check_one_of allow_unsafe "$opt_allow_unsafe" "yes no"
    [ -z "$opt_db_snapshot" ] || check_one_of db_snapshot "$opt_db_snapshot" "on off"
    [ -z "$opt_migrate_down" ] || check_one_of migrate_down "$opt_migrate_down" "yes no"
    [ -z "$opt_yes" ] || check_one_of yes "$opt_yes" "yes no"
    [ -z "$opt_clean" ] || check_one_of clean "$opt_clean" "yes no"
    [ "$opt_clean" != yes ] || [ "$opt_mode" = deploy ] || die "clean is for mode deploy only"
    check_destination "$opt_destination"
    [ -z "$opt_maintenance" ] || check_one_of maintenance "$opt_maintenance" "yes no"
    [ "$opt_maintenance" != yes ] || [ "$opt_mode" = deploy ] || die "maintenance is for mode deploy only"
}

# The lock is ours: is the server still what the deployer planned against?
check_under_lock() {
    local root=$opt_root link newest n limit
    link=$(current_link "$root")
    if [ "${link:--}" != "$opt_expect_current" ]; then
        echo "current on $(hostname) is now ${link:-missing}, but this deploy was planned against ${opt_expect_current/#-/no current release}: another deploy landed meanwhile; run the command again"
        return
    fi
    if [ "$opt_mode" != deploy ]; then
        [ -d "$root/$C_RELEASES/$opt_target" ] || {
            echo "release $opt_target does not exist on $(hostname): see 'cargo xtask deploy list'"
            return
        }
        [ "$(state_of "$root/$C_RELEASES/$opt_target")" = "$C_STATE_SUCCEEDED" ] || {
            echo "release $opt_target on $(hostname) is $(state_of "$root/$C_RELEASES/$opt_target"), not $C_STATE_SUCCEEDED"
            return
        }
        return
    fi
    [ ! -e "$root/$C_RELEASES/$opt_release" ] || {
        echo "release $opt_release already exists on $(hostname): run the command again"
        return
    }
    limit=$(name_in "$C_FUTURE_TOLERANCE_SECS")
    [[ ! "$opt_release" > "$limit" ]] || {
        echo "release name $opt_release is ahead of the clock of $(hostname) (it is $(name_in 0) there): check the clocks (the deploying machine's or the server's) and run the command again"
        return
    }
    # The newest release that is not in the future (one named ahead of the clock is ignored).
    newest=""
    for n in $(release_names "$root"); do
        if [[ ! "$n" > "$limit" ]]; then newest=$n; fi
    done
    if [ -n "$newest" ] && [[ ! "$opt_release" > "$newest" ]]; then
        echo "release name $opt_release is not newer than $newest on $(hostname) (clock skew, or two deploys in one second): run the command again"
    fi
}

sub_run() {
    parse_opts run "$@"
    validate_plan
    local root=$opt_root lock dead jobdir events problem started started_ms k v rc=0 w
    local took_over="" unverified="" later_warnings=()
    lock=$(lock_dir "$root")
    started=$(iso_now)
    started_ms=$(now_ms)
    preflight
    take_lock "$root" "$opt_token" "$(
        out user "${opt_deployer%@*}"
        out host "$opt_client_host"
        out pid "$opt_client_pid"
        out started "$started"
        out started_epoch "$((started_ms / 1000))"
        out command "$opt_command"
        out commit "$opt_commit$([ "$opt_dirty" = yes ] && echo +dirty)"
        out release "${opt_release:-$opt_target}"
        out token "$opt_token"
        out boot_id "$(boot_id)"
    )" || rc=$?
    case "$rc" in
        0) ;;
        1)
            out conflict yes
            lock_info "$root"
            refuse "another deploy holds $lock on $(hostname)"
            ;;
        *) refuse "could not make the deploy lock $lock on $(hostname) ($put_error): free space there and run the command again" ;;
    esac
    # The lock is ours (its flock on fd 8): record what dead jobs left (ours, and any a taker
    # that died meanwhile left aside).
    for dead in "$lock".dead.*; do
        [ -d "$dead" ] || continue
        settle_dead "$root" "$dead" "the next $opt_mode ($opt_token)"
        rm -rf -- "$dead"
    done
    problem=$(check_under_lock)
    if [ -n "$problem" ]; then
        exec 8>&-
        release_lock "$root" "$opt_token" >/dev/null
        refuse "$problem"
    fi
    mkdir -p "$root/$C_JOBS"
    chmod 0700 "$root/$C_JOBS"
    jobdir=$root/$C_JOBS/$opt_token
    mkdir -m 0700 "$jobdir"
    (umask 077 && : >"$jobdir/events" && : >"$jobdir/tool.log")
    events=$jobdir/events
    [ -z "$took_over" ] || emit warn "$took_over"
    for w in "${later_warnings[@]}"; do emit warn "$w"; done
    [ -z "$unverified" ] || printf '%s' "$unverified" >"$jobdir/v.unverified"
    put "$lock/plan" "$(
        for k in $C_KEYS_run; do
            v=opt_$k
            printf '%s=%s\n' "$k" "${!v:-}"
        done
        printf 'started=%s\nstarted_ms=%s\n' "$started" "$started_ms"
    )" || {
        exec 8>&-
        release_lock "$root" "$opt_token" >/dev/null
        refuse "could not write $lock/plan on $(hostname) ($put_error): free space there and run the command again"
    }
    # Its own session, no terminal, stdin closed, none of our descriptors but the lock's flock
    # (fd 8, which it holds from now on): the ssh session can end at any moment without it
    # noticing.
    (cd / && exec setsid "${SELF[@]}" job "root=$root" "token=$opt_token" </dev/null >>"$jobdir/job.out" 2>&1 7>&-) &
    exec 8>&-
    out token "$opt_token"
    out now "$(now_s)"
    out jobdir "$jobdir"
    out started yes
    follow_stream "$root" "$opt_token" 0 driver
}

# --- follow ----------------------------------------------------------------------------------

# Pass one line from the deployer to the job.
handle_message() { # LOCK LINE
    local lock=$1 line=$2 n i path write_failed=""
    case "$line" in
        beat) ;;
        uploaded | checked | go | commit | revert | begin)
            : >"$lock/msg/$line"
            ;;
        "abort "*)
            printf '%s\n' "${line#abort }" | head -c 300 >"$lock/msg/abort"
            ;;
        "manifest "*)
            n=${line#manifest }
            check_digits manifest "$n"
            : >"$lock/manifest.tmp"
            for ((i = 0; i < n; i++)); do
                IFS= read -r path || break
                printf '%s\n' "$path" >>"$lock/manifest.tmp" || write_failed=yes
            done
            # A list cut short by a full disk is no list: the job then says none was sent.
            if [ -n "${write_failed:-}" ]; then
                rm -f "$lock/manifest.tmp"
                return 0
            fi
            mv -f "$lock/manifest.tmp" "$lock/msg/manifest"
            ;;
        *) return 0 ;;
    esac
    printf '\n' >&5 2>/dev/null || true
}

# Stream a job's events from OFFSET (bytes) until it ends; as the driver, also take messages
# from stdin (an EOF there means the deployer went away: stop following, the job goes on).
follow_stream() { # ROOT TOKEN OFFSET ROLE
    local root=$1 token=$2 offset=$3 role=$4 lock jobdir pid tailpid line partial rc=0
    lock=$(lock_dir "$root")
    jobdir=$root/$C_JOBS/$token
    [ -d "$jobdir" ] || die "no job $token on $(hostname)"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if [ -s "$jobdir/pid" ]; then break; fi
        sleep 0.05
    done
    pid=$(cat "$jobdir/pid" 2>/dev/null || echo 0)
    check_digits pid "$pid"
    if [ -s "$jobdir/boot" ] && [ "$(head -c 64 "$jobdir/boot")" != "$(boot_id)" ]; then
        # A job of an earlier boot is gone, whatever process has its pid now: its events as
        # they are.
        tail -c "+$((offset + 1))" "$jobdir/events" 2>/dev/null &
    else
        tail -c "+$((offset + 1))" -s 0.1 -f --pid="$pid" "$jobdir/events" 2>/dev/null &
    fi
    tailpid=$!
    if [ "$role" = driver ] && [ -p "$lock/fifo" ] && [ "$(meta "$lock/info" token)" = "$token" ]; then
        exec 5<>"$lock/fifo"
        touch "$lock/hb"
        # A read that times out keeps what it read of a line in `line`: that is the start of
        # the next message, not a message (a manifest arrives in pieces on a busy link).
        partial=""
        while kill -0 "$tailpid" 2>/dev/null; do
            if IFS= read -r -t 0.2 line; then
                touch "$lock/hb" 2>/dev/null || true
                handle_message "$lock" "$partial$line"
                partial=""
            else
                rc=$?
                partial+=$line
                if [ "$rc" -le 128 ]; then
                    # The deployer closed its end: it is gone or done.
                    kill "$tailpid" 2>/dev/null || true
                    wait "$tailpid" 2>/dev/null || true
                    exit 0
                fi
            fi
        done
    fi
    wait "$tailpid" 2>/dev/null || true
    # The job's process is gone, but a step it started may still run and hold its lock (a
    # migration goes on to its end when its job is killed): the job is over when that ends.
    while [ "$(meta "$lock/info" token 2>/dev/null)" = "$token" ] && job_alive "$lock"; do
        sleep 0.2
    done
    say_unrecorded "$root" "$token"
    out eof yes
}

sub_follow() {
    parse_opts follow "$@"
    check_root "$opt_root"
    check_token "$opt_token"
    check_digits offset "$opt_offset"
    check_one_of role "$opt_role" "driver observer"
    follow_stream "$opt_root" "$opt_token" "$opt_offset" "$opt_role"
}

# --- unlock ----------------------------------------------------------------------------------

sub_unlock() {
    parse_opts unlock "$@"
    check_root "$opt_root"
    check_token "$opt_token"
    check_one_of force "$opt_force" "yes no"
    check_word deployer "$opt_deployer"
    check_destination "$opt_destination"
    local root=$opt_root lock held pid i release commit holder gone
    local took_over="" unverified="" later_warnings=()
    lock=$(lock_dir "$root")
    guard_on "$root"
    if [ ! -d "$lock" ]; then
        guard_off
        out unlocked no
        die "there is no deploy lock on $(hostname) any more: nothing to remove"
    fi
    held=$(meta "$lock/info" token)
    if [ "$held" != "$opt_token" ]; then
        guard_off
        out unlocked no
        die "the lock on $(hostname) changed since it was shown (it is now held by token $held): nothing removed; look again with cargo xtask deploy status"
    fi
    guard_off
    if job_alive "$lock"; then
        [ "$opt_force" = yes ] ||
            die "the deploy job holding the lock on $(hostname) is alive (step $(head -c 64 "$lock/phase" 2>/dev/null || echo '?')): follow it with 'cargo xtask deploy status --follow', or stop it with 'deploy unlock --force'"
        # Ask it to stop at its next wait; a job that does not stop is killed.
        printf 'interrupted: stopped by deploy unlock --force (%s)\n' "$opt_deployer" >"$lock/msg/abort" 2>/dev/null || true
        for i in $(seq 1 100); do
            job_alive "$lock" || break
            sleep 0.1
        done
        if job_alive "$lock"; then
            pid=$(cat "$root/$C_JOBS/$opt_token/pid" 2>/dev/null || echo 0)
            check_digits pid "$pid"
            kill -TERM -- "-$pid" 2>/dev/null || true
            for i in $(seq 1 50); do
                job_alive "$lock" || break
                sleep 0.1
            done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        [ -d "$lock" ] || {
            out unlocked yes
            out stopped job
            return 0
        }
    fi
    # No live job: move the lock aside (if another unlock or a deploy taking it over has not,
    # meanwhile). A result its job could not record is recorded now; else its release, if it was
    # being prepared, failed. The unlock is one deploy.log line.
    release=$(meta "$lock/info" release)
    commit=$(meta "$lock/info" commit)
    holder="$(meta "$lock/info" user)@$(meta "$lock/info" host) since $(meta "$lock/info" started)"
    gone=$lock.unlocked.$$
    guard_on "$root"
    if [ ! -d "$lock" ] || [ "$(meta "$lock/info" token)" != "$opt_token" ]; then
        guard_off
        out unlocked no
        die "the lock on $(hostname) was removed meanwhile (another deploy unlock, or a deploy that took it over): nothing left to remove"
    fi
    mv -T -- "$lock" "$gone"
    guard_off
    out unlocked yes
    # deploy --maintenance: what its job turned on goes off with its lock.
    maint_off "$root" "$opt_token" || true
    if unrecorded_marker "$gone" >/dev/null; then
        settle_dead "$root" "$gone" "deploy unlock ($opt_deployer)"
    elif c_is_release "$release" && [ "$(state_of "$root/$C_RELEASES/$release")" = "$C_STATE_PREPARING" ]; then
        put "$root/$C_RELEASES/$release/$C_STATE_FILE" "$C_STATE_FAILED" || true
    fi
    rm -rf -- "$gone"
    log_line "$root" "$(iso_now)" "$opt_deployer" "$commit" - "$release" unlocked 0.0 - \
        "lock of $holder removed by deploy unlock (its job was not running)" \
        "${opt_destination:+destination=$opt_destination}"
}

# --- log -------------------------------------------------------------------------------------

# The last LINES lines of deploy.log, each as a `line=` reply.
sub_log() {
    parse_opts log "$@"
    check_root "$opt_root"
    check_digits lines "$opt_lines"
    [ -f "$opt_root/$C_LOG" ] || return 0
    tail -n "$opt_lines" "$opt_root/$C_LOG" | while IFS= read -r l; do out line "$l"; done
}

# --- receive ---------------------------------------------------------------------------------

# A small upload as one tar stream on stdin (the deployer's alternative to rsync when it knows
# every file it sends changed): unpacked into the release this deploy's job seeded. Each file
# is unlinked first, so the seed's hard links to earlier releases are never written through;
# tar refuses member names with '..' and strips leading '/'.
sub_receive() {
    parse_opts receive "$@"
    check_root "$opt_root"
    check_token "$opt_token"
    check_release "$opt_release"
    local root=$opt_root rel lock err
    lock=$(lock_dir "$root")
    rel=$root/$C_RELEASES/$opt_release
    [ "$(meta "$lock/info" token)" = "$opt_token" ] ||
        die "the deploy lock on $(hostname) is not this deploy's (token $opt_token): nothing received"
    if [ ! -d "$rel" ] || [ -L "$rel" ] || [ "$(head -c 64 "$rel/$C_STATE_FILE" 2>/dev/null)" != "$C_STATE_PREPARING" ]; then
        die "release $opt_release on $(hostname) is not being prepared: nothing received"
    fi
    umask 022
    err=$(tar -x -f - -C "$rel" --no-same-owner --no-same-permissions --unlink-first --touch 2>&1) ||
        die "unpacking the upload into $rel failed on $(hostname): $(one_line "$err" 300)"
    out received yes
}

# --- env files ---------------------------------------------------------------------------------

# An env file as it is (`env.error` when it is not the app user's 0600 plain file), as hex
# (its bytes never pass through a shell variable), and the names of its backups, oldest first.
sub_envread() {
    parse_opts envread "$@"
    check_root "$opt_root"
    check_one_of env "$opt_env" "backend frontend"
    local p problem b
    p=$opt_root/$(env_rel "$opt_env")
    problem=$(env_problem "$p" "--${opt_env}-env")
    if [ -n "$problem" ]; then
        out env.error "$problem"
        return 0
    fi
    out env.path "$p"
    out env.hex "$(od -An -v -tx1 -- "$p" | tr -d ' \n')"
    for b in $(env_backups "$p"); do out env.backup "${b##*/}"; done
}

# The pushed file (stdin, at most C_ENV_MAX_BYTES) written whole beside the env file, 0600, as
# ENV_STAGED + the job's token, only while this job holds the lock; its sha256 is the reply, for
# the deployer to compare with what it sent. Never in the job's directory, never in a log.
sub_envstage() {
    parse_opts envstage "$@"
    check_root "$opt_root"
    check_token "$opt_token"
    check_one_of env "$opt_env" "backend frontend"
    local lock p dest tmp size
    lock=$(lock_dir "$opt_root")
    { [ "$(meta "$lock/info" token)" = "$opt_token" ] && [ "$(meta "$lock/plan" mode)" = env ]; } ||
        die "the deploy lock on $(hostname) is not this env push's (token $opt_token): nothing received"
    p=$opt_root/$(env_rel "$opt_env")
    dest=$p$C_ENV_STAGED$opt_token
    tmp=$dest.tmp
    umask 077
    rm -f -- "$tmp"
    head -c "$((C_ENV_MAX_BYTES + 1))" >"$tmp" || {
        rm -f -- "$tmp"
        die "could not write $tmp on $(hostname) (is the disk full?): nothing was changed"
    }
    size=$(stat -c %s -- "$tmp")
    if [ "$size" -gt "$C_ENV_MAX_BYTES" ]; then
        rm -f -- "$tmp"
        die "the env file sent is over $C_ENV_MAX_BYTES bytes: nothing was changed"
    fi
    { sync -- "$tmp" && mv -fT -- "$tmp" "$dest"; } || {
        rm -f -- "$tmp"
        die "could not put $dest in place on $(hostname): nothing was changed"
    }
    out staged.sha256 "$(sha256sum -- "$dest" | cut -d' ' -f1)"
}

# --- compare ---------------------------------------------------------------------------------

# The seeded release against the deployer's hashes of the files it ships (`SHA256  PATH` lines
# on stdin): every listed file that is not a regular file with that hash (changed by someone
# on the server, or by a commit since) is removed from the release and named (`differs=PATH`),
# so the upload sends it; what matches stays a hard link. Nothing the server recorded (the
# seal, times, sizes) is trusted: the app user could have written it.
sub_compare() {
    parse_opts compare "$@"
    check_root "$opt_root"
    check_token "$opt_token"
    check_release "$opt_release"
    local root=$opt_root rel lock want bad differs f
    lock=$(lock_dir "$root")
    rel=$root/$C_RELEASES/$opt_release
    [ "$(meta "$lock/info" token)" = "$opt_token" ] ||
        die "the deploy lock on $(hostname) is not this deploy's (token $opt_token): nothing compared"
    if [ ! -d "$rel" ] || [ -L "$rel" ] || [ "$(head -c 64 "$rel/$C_STATE_FILE" 2>/dev/null)" != "$C_STATE_PREPARING" ]; then
        die "release $opt_release on $(hostname) is not being prepared: nothing compared"
    fi
    want=$root/$C_JOBS/$opt_token/seed.hashes
    cat >"$want" || die "could not write $want on $(hostname) (is the disk full?)"
    bad=$(hashes_problem "$want")
    [ -z "$bad" ] || die "refusing the hashes: '$(one_line "$bad" 200)' is not a SHA-256 and a path inside the release"
    out compared "$(grep -c . "$want" || true)"
    differs=$(seed_compare "$rel" "$want" | LC_ALL=C sort)
    rm -f -- "$want"
    while IFS= read -r f; do
        [ -z "$f" ] || out differs "$f"
    done <<<"$differs"
}

# --- maintenance -------------------------------------------------------------------------------

# `cargo xtask maintenance on|off|status` (no lock: the flag and the page are the app user's
# own, nginx reads them on every request; a deploy --maintenance job turns off only what it
# turned on).
sub_maintenance() {
    parse_opts maintenance "$@"
    check_root "$opt_root"
    check_one_of action "$opt_action" "on off status"
    local root=$opt_root
    [ "$opt_action" = on ] || [ -z "$opt_message" ] || die "message is for action on only"
    case "$opt_action" in
        on)
            check_word deployer "$opt_deployer"
            maint_check_message "$opt_message"
            maint_on "$root" "$opt_message" "$opt_deployer" "" ||
                die "could not turn maintenance on under $root on $(hostname) ($put_error): 'cargo xtask maintenance status' shows what is on"
            ;;
        off)
            maint_off "$root" ||
                die "could not remove $root/$C_MAINTENANCE_FLAG on $(hostname) ($put_error): maintenance is still on"
            ;;
    esac
    maint_info "$root"
}

main() {
    [ $# -ge 1 ] || die "usage: deploy.sh SUBCOMMAND key=value..."
    local sub=$1
    shift
    in_list "$sub" "$C_SUBS" || die "unknown subcommand '$sub'"
    "sub_$sub" "$@"
}

main "$@"
