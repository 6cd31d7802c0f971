#!/usr/bin/env bash
# Boot-time check of the deploy root (innercontext-release-check.service, before the app units):
# `current` must point at a complete, succeeded release. After a power loss right after a
# deploy it may point at a release whose files were not all on disk, or one never marked
# succeeded: then current goes back to the newest succeeded release that is intact (every file
# as its seal recorded it), and deploy.log says so. Runs as the app user; changes nothing when
# current is fine.
#     bash boot-check.sh ROOT
set -euo pipefail
umask 022
# shellcheck source=scripts/deploy-lib.sh
. "$(dirname -- "$0")/deploy-lib.sh"

# Whether a release is succeeded and its files are as its seal says (sizes and times).
intact() { # RELEASE_DIR
    [ "$(state_of "$1")" = "$C_STATE_SUCCEEDED" ] || return 1
    [ -f "$1/.seal" ] || return 0
    (cd "$1" && find backend frontend scripts systemd nginx \
        \( -name .venv -o -name __pycache__ -o -name node_modules \) -prune -o \
        -type f -printf '%p\t%s\t%T@\n' 2>/dev/null | LC_ALL=C sort) | cmp -s - "$1/.seal"
}

root=${1:?usage: boot-check.sh ROOT}
check_root "$root"
cur=$(current_release "$root")
if [ -n "$cur" ] && intact "$root/$C_RELEASES/$cur"; then
    echo "current is $cur, $C_STATE_SUCCEEDED and intact"
    exit 0
fi
good=""
for name in $(release_names "$root" | sort -r); do
    [ "$name" != "$cur" ] || continue
    if intact "$root/$C_RELEASES/$name"; then
        good=$name
        break
    fi
done
if [ -z "$good" ]; then
    echo "current is ${cur:-$(current_link "$root")} and not intact, and no other release is: left as it is" >&2
    exit 0
fi
ln -sfn "$C_RELEASES/$good" "$root/.current.boot.$$"
mv -T "$root/.current.boot.$$" "$root/$C_CURRENT"
sync -f "$root" 2>/dev/null || true
log_line "$root" "$(iso_now)" boot-check - boot "$good" restored-at-boot 0.0 - \
    "current was ${cur:-$(current_link "$root")}, not a $C_STATE_SUCCEEDED intact release, at boot"
echo "current was ${cur:-$(current_link "$root")}; now $good (the newest $C_STATE_SUCCEEDED, intact release)"
