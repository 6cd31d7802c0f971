#!/usr/bin/env bash
# Server side of `cargo xtask exec` and `cargo xtask db psql`: one call over the deployer's one
# ssh connection, sent with it like deploy.sh (contract.sh and deploy-lib.sh in front):
#     bash -c "<the packed script>" exec.sh exec root=ROOT deployer=WHO -- CMD ARG...
#     bash -c "<the packed script>" exec.sh psql root=ROOT deployer=WHO -- PSQL-ARG...
# As the app user, in ROOT/current/backend (the release's backend, where alembic.ini is), with
# the release's virtualenv first on PATH (and VIRTUAL_ENV):
#   exec  CMD with the backend's env file (shared/backend/.env) in its environment, read by
#         env_pairs in the format of xtask/src/envfile.rs, never sourced;
#   psql  psql to the database of DATABASE_URL, its password in a 0600 file in a private temp
#         directory (PGPASSFILE, written by the backend's deploytool), removed at the end; the
#         env file's values stay out of psql's environment and command line.
# The command is this shell's child; when it has ended, however it ended (a signal, or the
# connection dropped: this shell outlives a hang-up and passes it on to the command), one
# deploy.log line records who ran what and its exit code (result=ran exit=N), and this shell
# exits with that code. Only a SIGKILL of this shell (or the host going down) leaves no line.
# Nothing here takes the deploy lock. A failure before the command: `exec: WHY` on stderr,
# exit 125.
set -euo pipefail

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-lib.sh
    . "$(dirname -- "$0")/deploy-lib.sh"
fi

# The command as deploy.log shows it: its words as bash would quote them, cut at this length.
EXEC_TEXT_MAX=200

exec_fail() {
    printf 'exec: %s\n' "$*" >&2
    exit 125
}

# env_pairs FILE: the file's KEY=value lines, one per line on stdout, when the whole file is in
# the format of xtask/src/envfile.rs (blank lines, `#` comments, KEY=value with a value none of
# the readers changes); else only `line N: WHY` on stdout and status 1. A unit test runs it against
# envfile::parse.
env_pairs() {
    local file=$1 n=0 line key value rest seen=' ' ws pairs="" utf8=""
    local LC_ALL=C
    # read drops NUL bytes: when the bytes read fall short of the file's size, find the line
    # of the first one (as \001, which grep reads). Forks only then, or for non-ASCII text.
    nul_free_size "$file"
    if [ "$exec_read_bytes" != "$(wc -c <"$file")" ]; then
        n=$({ tr '\000' '\001' <"$file" | grep -n $'\001' || true; } | head -n 1 | cut -d: -f1)
        echo "line ${n:-1}: a control character"
        return 1
    fi
    while IFS= read -r line || [ -n "$line" ]; do
        if [ -z "$utf8" ] && [[ "$line" == *[$'\x80'-$'\xff']* ]]; then
            if ! iconv -f UTF-8 -t UTF-8 <"$file" >/dev/null 2>&1; then
                echo "line 1: the file is not UTF-8"
                return 1
            fi
            utf8=checked
        fi
        n=$((n + 1))
        if [ "${line%$'\r'}" != "$line" ]; then
            echo "line $n: the line ends in CR (a Windows line end): save it with LF line ends"
            return 1
        fi
        # Blank: only what Rust's str::trim removes (Unicode White_Space).
        rest=${line//[$' \t\v\f']/}
        for ws in $'\xc2\x85' $'\xc2\xa0' $'\xe1\x9a\x80' $'\xe2\x80\x80' $'\xe2\x80\x81' \
            $'\xe2\x80\x82' $'\xe2\x80\x83' $'\xe2\x80\x84' $'\xe2\x80\x85' $'\xe2\x80\x86' \
            $'\xe2\x80\x87' $'\xe2\x80\x88' $'\xe2\x80\x89' $'\xe2\x80\x8a' $'\xe2\x80\xa8' \
            $'\xe2\x80\xa9' $'\xe2\x80\xaf' $'\xe2\x81\x9f' $'\xe3\x80\x80'; do
            rest=${rest//"$ws"/}
        done
        if [ -z "$rest" ] || [ "${line:0:1}" = '#' ]; then
            if has_control "${line//$'\t'/}"; then
                echo "line $n: a control character"
                return 1
            fi
            continue
        fi
        case "$line" in
            *=*) ;;
            *)
                echo "line $n: neither KEY=value, a # comment nor blank"
                return 1
                ;;
        esac
        key=${line%%=*}
        value=${line#*=}
        if ! [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo "line $n: not a variable name"
            return 1
        fi
        if has_control "$value"; then
            echo "line $n: $key: the value holds a control character"
            return 1
        fi
        case "$value" in
            \"* | \'* | \`*) echo "line $n: $key: the value starts with a quote" && return 1 ;;
            *'#'*) echo "line $n: $key: the value holds '#'" && return 1 ;;
            *"\${"*) echo "line $n: $key: the value holds '\${'" && return 1 ;;
            ' '* | *' ') echo "line $n: $key: the value begins or ends with a space" && return 1 ;;
        esac
        if in_list "$key" "$seen"; then
            echo "line $n: $key is set twice"
            return 1
        fi
        seen="$seen$key "
        pairs+="$key=$value"$'\n'
    done <"$file"
    # Only a whole file in the format gives its pairs (an error never shows a value).
    printf '%s' "$pairs"
}

# nul_free_size FILE: exec_read_bytes, how many bytes bash's read gives of FILE (its size when
# it holds no NUL). No fork.
nul_free_size() {
    local LC_ALL=C line bytes=0
    while IFS= read -r line; do
        bytes=$((bytes + ${#line} + 1))
    done <"$1" 2>/dev/null
    exec_read_bytes=$((bytes + ${#line}))
}

# has_control TEXT: whether TEXT (UTF-8, read as bytes) holds a C0 or C1 control or DEL.
has_control() {
    local LC_ALL=C
    [[ "$1" =~ [$'\x01'-$'\x1f'$'\x7f'] ]] || [[ "$1" =~ $'\xc2'[$'\x80'-$'\x9f'] ]]
}

# pgpass_fields FILE: host, port, database and user of a libpq password file's one line (`:`
# and `\` escaped), one per line (the password is never printed).
pgpass_fields() {
    local line c field="" escaped="" i=0 n=0
    IFS= read -r line <"$1" || [ -n "$line" ]
    while [ "$i" -lt "${#line}" ]; do
        c=${line:i:1}
        i=$((i + 1))
        if [ -n "$escaped" ]; then
            field+=$c
            escaped=""
        elif [ "$c" = "\\" ]; then
            escaped=yes
        elif [ "$c" = : ]; then
            printf '%s\n' "$field"
            field=""
            n=$((n + 1))
            [ "$n" -lt 4 ] || return 0
        else
            field+=$c
        fi
    done
}

exec_child="" exec_passed=""

# Run the command as this shell's child and wait for it. A terminal's Ctrl-C (and QUIT) reaches
# it directly (it is in the terminal's process group) and not this shell, which ignores them; a
# hang-up or TERM this shell gets (the session's end: the connection dropped) is passed on to
# it, and this shell stays to record how it ended. Background children of a shell without job
# control have INT and QUIT ignored and stdin from /dev/null: env restores both. The status:
# 0-255, or `unknown` when bash lost it (the child ended while a trap ran: seen with bash 5.2).
run_child() {
    exec_status=""
    trap 'pass_on HUP' HUP
    trap 'pass_on TERM' TERM
    trap '' INT QUIT
    env --default-signal=INT,QUIT -- "$@" <&0 &
    exec_child=$!
    while :; do
        exec_passed=""
        wait "$exec_child" && exec_status=0 || exec_status=$?
        # A passed-on signal ended the wait, not the child: wait again.
        [ -n "$exec_passed" ] || break
    done
    trap - HUP TERM INT QUIT
    case "$exec_status" in
        [0-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) ;;
        *) exec_status=unknown ;;
    esac
}

# shellcheck disable=SC2317 # called by the traps of run_child
pass_on() {
    exec_passed=$1
    kill "-$1" "$exec_child" 2>/dev/null || true
}

# The deploy.log line of a command that ran: who, what (cut at EXEC_TEXT_MAX), its exit code.
exec_log() { # ROOT STARTED_ISO STARTED_US SCOPE RELEASE STATUS WORDS...
    local root=$1 started=$2 us=$3 scope=$4 release=$5 status=$6 text tenths
    shift 6
    tenths=$(((${EPOCHREALTIME/./} - us) / 100000))
    text=$(LC_ALL=C printf '%q ' "$@")
    text=${text% }
    if [ "${#text}" -gt "$EXEC_TEXT_MAX" ]; then
        text="${text:0:$((EXEC_TEXT_MAX - 3))}..."
    fi
    log_line "$root" "$started" "$opt_deployer" - "$scope" "$release" ran \
        "$((tenths / 10)).$((tenths % 10))" - "$text" \
        "exit=$status${opt_destination:+ destination=$opt_destination}" ||
        printf 'exec: the command ended with exit %s, but %s on %s could not record it (%s)\n' \
            "$status" "$root/$C_LOG" "$(hostname)" "$put_error" >&2
}

main() {
    local mode=${1:-} root release backend venv pairs started ms tmp=""
    shift || true
    opt_root="" opt_deployer="" opt_destination=""
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
        case "$1" in
            root=*) opt_root=${1#root=} ;;
            deployer=*) opt_deployer=${1#deployer=} ;;
            destination=*) opt_destination=${1#destination=} ;;
            *) exec_fail "unknown option '$1' (usage: exec.sh exec|psql root=ROOT deployer=WHO -- CMD...)" ;;
        esac
        shift
    done
    [ "${1:-}" = -- ] || exec_fail "no -- before the command (usage: exec.sh exec|psql root=ROOT deployer=WHO -- CMD...)"
    shift
    case "$mode" in exec | psql) ;; *) exec_fail "unknown mode '$mode' (exec or psql)" ;; esac
    [ "$#" -gt 0 ] || [ "$mode" = psql ] || exec_fail "no command to run"
    case "$opt_deployer" in *[!A-Za-z0-9@._+:/-]* | '') exec_fail "invalid deployer '$opt_deployer'" ;; esac
    case "$opt_destination" in *[!a-z0-9-]*) exec_fail "invalid destination '$opt_destination'" ;; esac
    root=$opt_root
    (check_root "$root" >/dev/null) || exec_fail "deploy root $root is missing on $(hostname) (or unsafe): run cargo xtask setup-server"
    release=$(current_release "$root")
    [ -n "$release" ] || exec_fail "no current release under $root on $(hostname): deploy one first (cargo xtask deploy)"
    backend=$root/$C_RELEASES/$release/backend
    venv=$backend/.venv
    cd -P -- "$backend" || exec_fail "cannot enter $backend on $(hostname)"
    [ -x "$venv/bin/python" ] || exec_fail "the release $release has no virtualenv ($venv/bin/python) on $(hostname): deploy again"
    # Builtins only (a fork is a millisecond or more): the time as iso_now writes it.
    TZ=UTC printf -v started '%(%Y-%m-%dT%H:%M:%SZ)T' -1
    ms=${EPOCHREALTIME/./}
    if [ "$mode" = exec ]; then
        [ -f "$root/$C_ENV_BACKEND" ] || exec_fail "$root/$C_ENV_BACKEND is missing on $(hostname): run cargo xtask setup-server --backend-env FILE"
        pairs=$(env_pairs "$root/$C_ENV_BACKEND") ||
            exec_fail "$root/$C_ENV_BACKEND on $(hostname) is not in the env-file format ($pairs): fix it (see docs/exec.md)"
        local vars=()
        [ -z "$pairs" ] || mapfile -t vars <<<"$pairs"
        run_child "${vars[@]}" "PATH=$venv/bin:$PATH" "VIRTUAL_ENV=$venv" \
            /bin/sh -c 'exec "$@"' sh "$@"
    else
        tmp=$(mktemp -d) || exec_fail "cannot make a private temporary directory on $(hostname)"
        trap 'rm -rf -- "$tmp"' EXIT
        local host port db user
        deploytool "$backend" pgpass "$tmp/pgpass" ||
            exec_fail "the password file for psql could not be written on $(hostname): $tool_error"
        { IFS= read -r host && IFS= read -r port && IFS= read -r db && IFS= read -r user; } < <(pgpass_fields "$tmp/pgpass") ||
            exec_fail "the password file $tmp/pgpass on $(hostname) is not one host:port:database:user:password line"
        run_child "PGPASSFILE=$tmp/pgpass" psql --no-password "--host=$host" "--port=$port" \
            "--username=$user" "--dbname=$db" "$@"
        set -- psql "$@"
    fi
    exec_log "$root" "$started" "$ms" "$mode" "$release" "$exec_status" "$@"
    [ "$exec_status" != unknown ] || exit 129
    exit "$exec_status"
}

main "$@"
