#!/usr/bin/env bash
# Boot-time check of the deploy root (innercontext-release-check.service, before the app units):
# `current` must point at a complete, succeeded release. After a power loss right after a
# deploy it may point at a release whose files were not all on disk, or one never marked
# succeeded: then current goes back to the newest succeeded release that is intact (every file
# as its seal recorded it: `intact`, the job's notion too), and deploy.log says so. A release
# whose job succeeded but could not record it (a full disk: the result waits in the lock) counts
# as succeeded. Runs as the app user; changes nothing when current is fine, nor while a deploy
# job holds the lock (it owns current then).
#     bash boot-check.sh ROOT
set -euo pipefail
umask 022
# shellcheck source=scripts/deploy-lib.sh
. "$(dirname -- "$0")/deploy-lib.sh"
# shellcheck source=scripts/deploy-lock.sh
. "$(dirname -- "$0")/deploy-lock.sh"

root=${1:?usage: boot-check.sh ROOT}
check_root "$root"
if job_alive "$(lock_dir "$root")"; then
    echo "a deploy job holds $(lock_dir "$root"): left to it"
    exit 0
fi
cur=$(current_release "$root")
if [ -n "$cur" ] && intact "$root" "$cur"; then
    if [ "$(state_of "$root/$C_RELEASES/$cur")" = "$C_STATE_SUCCEEDED" ]; then
        echo "current is $cur, $C_STATE_SUCCEEDED and intact"
    else
        echo "current is $cur, intact, and its job's result (success) waits in $(lock_dir "$root") to be recorded by the next deploy or rollback"
    fi
    exit 0
fi
good=$(newest_intact "$root" "$cur")
if [ -z "$good" ]; then
    echo "current is ${cur:-$(current_link "$root")} and not intact, and no other release is: left as it is" >&2
    exit 0
fi
if ! { ln -sfn "$C_RELEASES/$good" "$root/.current.boot.$$" && mv -T "$root/.current.boot.$$" "$root/$C_CURRENT"; }; then
    rm -f "$root/.current.boot.$$"
    echo "current is ${cur:-$(current_link "$root")}, not a $C_STATE_SUCCEEDED intact release, and switching it to $good failed: left as it is" >&2
    exit 1
fi
sync -f "$root" 2>/dev/null || true
log_line "$root" "$(iso_now)" boot-check - boot "$good" restored-at-boot 0.0 - \
    "current was ${cur:-$(current_link "$root")}, not a $C_STATE_SUCCEEDED intact release, at boot" ||
    echo "could not append to $root/$C_LOG ($put_error)" >&2
echo "current was ${cur:-$(current_link "$root")}; now $good (the newest $C_STATE_SUCCEEDED, intact release)"
