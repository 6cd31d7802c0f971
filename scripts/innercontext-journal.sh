#!/bin/bash
# innercontext-journal: the journal of the innercontext units, for the deploy user.
#
# Installed by `cargo xtask setup-server` as /usr/local/sbin/innercontext-journal (root:root
# 0755) and allowed to the innercontext user by one line of the sudoers drop-in, so that user
# reads its own units' logs without being in systemd-journal (which reads the whole journal).
#
#   sudo -n /usr/local/sbin/innercontext-journal [-n LINES] [-f] [--since WHEN] [-o FORMAT] UNIT...
#
#   UNIT        innercontext, innercontext-node or innercontext-pricing-worker (".service" may
#               follow); several are merged by time
#   -n LINES    the last LINES entries, 0 to 100000 (default 100)
#   -f          follow: keep printing new entries until stopped
#   --since WHEN
#               journalctl's --since, e.g. "2026-11-28 10:15:00", -1h, today (letters, digits,
#               space and : . + - only, at most 64 characters)
#   -o FORMAT   short (default), short-iso, short-precise, cat or json
#
# Anything else exits 2 with one line on stderr naming the problem. The arguments are never
# evaluated; journalctl runs with --no-pager and a clean environment (no pager, no SYSTEMD_*
# or other variables from the caller). Its interpreter is /bin/bash by its full path (never the
# caller's PATH: sudo runs this as root), and the drop-in sets sudo's secure_path as well.
set -euo pipefail

UNITS=(innercontext innercontext-node innercontext-pricing-worker)
FORMATS=(short short-iso short-precise cat json)

usage() {
    printf 'innercontext-journal: %s (usage: innercontext-journal [-n LINES] [-f] [--since WHEN] [-o FORMAT] UNIT...)\n' "$1" >&2
    exit 2
}

one_of() { # WORD CHOICE...
    local w=$1 c
    shift
    for c in "$@"; do [ "$w" = "$c" ] && return 0; done
    return 1
}

lines=100 follow=0 since="" format=short units=()
while (($#)); do
    case $1 in
    -n)
        (($# >= 2)) || usage "-n needs a number of lines"
        if ! [[ $2 =~ ^[0-9]{1,6}$ ]] || ((10#$2 > 100000)); then
            usage "-n takes 0 to 100000 lines, not '$2'"
        fi
        lines=$((10#$2))
        shift 2
        ;;
    -f)
        follow=1
        shift
        ;;
    --since)
        (($# >= 2)) || usage "--since needs a time"
        [[ $2 =~ ^[A-Za-z0-9\ :.+-]{1,64}$ ]] ||
            usage "--since takes a date or a relative time (letters, digits, space, : . + -), not '$2'"
        since=$2
        shift 2
        ;;
    -o)
        (($# >= 2)) || usage "-o needs a format"
        one_of "$2" "${FORMATS[@]}" || usage "-o takes one of ${FORMATS[*]}, not '$2'"
        format=$2
        shift 2
        ;;
    *)
        one_of "${1%.service}" "${UNITS[@]}" || usage "'$1' is not one of the units ${UNITS[*]}"
        units+=("${1%.service}.service")
        shift
        ;;
    esac
done
((${#units[@]})) || usage "name at least one unit"

args=(--no-pager --quiet --lines="$lines" --output="$format")
if ((follow)); then args+=(--follow); fi
if [ -n "$since" ]; then args+=(--since="$since"); fi
for unit in "${units[@]}"; do args+=(--unit="$unit"); done
exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 /usr/bin/journalctl "${args[@]}"
