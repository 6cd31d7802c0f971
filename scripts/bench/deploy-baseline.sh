#!/usr/bin/env bash
# The benchmark's baseline: a straightforward deploy script written from the deployment guide
# (docs/DEPLOYMENT.md, "What deploy.sh Does"), the way a careful team would write it by hand.
# Each of the guide's twelve steps is one ssh (or rsync) call on a new connection (no
# ControlMaster), the release is uploaded in full, `current` is switched with `ln -sfn`, and
# health is polled with curl over ssh. `cargo xtask bench` measures `cargo xtask deploy`
# against it on an identical machine; it is not used to deploy anything else.
#
#   scripts/bench/deploy-baseline.sh [all|backend|frontend|list|rollback]
#
# Environment (as in the guide): DEPLOY_SERVER (default innercontext), DEPLOY_ROOT (default
# /opt/innercontext), DEPLOY_ALLOW_DIRTY=1. For the benchmark: DEPLOY_SSH_CONFIG (an ssh
# config file), DEPLOY_SKIP_CHECKS=1 (no lint or tests; the frontend is still built), and
# TEST_DATABASE_URL (the PostgreSQL the backend tests use).
set -euo pipefail

SERVER=${DEPLOY_SERVER:-innercontext}
ROOT=${DEPLOY_ROOT:-/opt/innercontext}
SCOPE=${1:-all}
KEEP=5

die() {
    echo "deploy-baseline: $*" >&2
    exit 1
}

case "$ROOT" in
    /*) ;;
    *) die "DEPLOY_ROOT '$ROOT' must be an absolute path" ;;
esac
case "$ROOT" in
    *[!A-Za-z0-9/._-]* | */../* | */..) die "DEPLOY_ROOT '$ROOT' has characters this script does not quote" ;;
esac
case "$SCOPE" in
    all | backend | frontend | list | rollback) ;;
    *) die "unknown command '$SCOPE' (valid: all, backend, frontend, list, rollback)" ;;
esac

# A new connection for every call: no ControlMaster, no multiplexing.
SSH=(ssh -o BatchMode=yes -o ControlMaster=no -o ControlPath=none)
if [ -n "${DEPLOY_SSH_CONFIG:-}" ]; then
    SSH+=(-F "$DEPLOY_SSH_CONFIG")
fi
RSYNC_RSH=$(printf '%q ' "${SSH[@]}")

remote() {
    "${SSH[@]}" "$SERVER" "$1"
}

step() {
    echo "==> $*" >&2
}

# The deploy log line and the lock's content name the deployer; quoted for the remote shell.
DEPLOYER=$(printf '%q' "$(id -un)@$(hostname)")
LOCK=$ROOT/.deploy.lock

unlock() {
    remote "rm -f $LOCK" || true
}

health() {
    step "10. health checks"
    remote "for i in \$(seq 1 30); do
        if curl -sf -o /dev/null http://127.0.0.1:8000/health-check &&
            curl -sf -o /dev/null http://127.0.0.1:3000/ &&
            systemctl is-active --quiet innercontext-pricing-worker; then
            exit 0
        fi
        sleep 1
    done
    echo 'health checks failed' >&2
    exit 1"
}

restart() {
    step "9. restart $*"
    local cmds=() unit
    for unit in "$@"; do
        cmds+=("sudo -n systemctl restart $unit")
    done
    local joined
    joined=$(printf '%s && ' "${cmds[@]}")
    remote "${joined% && }"
}

if [ "$SCOPE" = list ]; then
    remote "cd $ROOT/releases && ls -1 | sort -r && echo current: \$(readlink $ROOT/current)"
    exit 0
fi

if [ "$SCOPE" = rollback ]; then
    step "2. acquire $LOCK"
    remote "set -o noclobber; echo $DEPLOYER rollback \$(date -u +%FT%TZ) > $LOCK" ||
        die "another deploy holds $LOCK"
    trap unlock EXIT
    step "find and switch to the previous release"
    target=$(remote "cd $ROOT/releases && cur=\$(basename \"\$(readlink $ROOT/current)\") &&
        prev=\$(ls -1 | sort | awk -v c=\"\$cur\" '\$0 < c' | tail -n 1) &&
        [ -n \"\$prev\" ] && ln -sfn releases/\$prev $ROOT/current && echo \$prev")
    [ -n "$target" ] || die "no release older than current to roll back to"
    restart innercontext innercontext-node innercontext-pricing-worker
    health
    step "12. log and unlock"
    remote "echo \"\$(date -u +%FT%TZ) deployer=$DEPLOYER release=$target result=rollback\" >> $ROOT/deploy.log && rm -f $LOCK"
    trap - EXIT
    echo "rolled back to $target" >&2
    exit 0
fi

# 1. Local checks (strict, fail-fast), and the build: the server never builds.
step "1. local checks"
if [ "${DEPLOY_ALLOW_DIRTY:-}" != 1 ] && [ -n "$(git status --porcelain)" ]; then
    die "the working tree has uncommitted changes (DEPLOY_ALLOW_DIRTY=1 to deploy anyway)"
fi
if [ "$SCOPE" != frontend ] && [ "${DEPLOY_SKIP_CHECKS:-}" != 1 ]; then
    (
        cd backend
        uv sync --quiet --locked
        uv run --locked ruff check --quiet .
        uv run --locked ruff format --check --quiet .
        uv run --locked pytest -q >/dev/null
    )
fi
if [ "$SCOPE" != backend ]; then
    (
        cd frontend
        pnpm install --frozen-lockfile --reporter=silent
        if [ "${DEPLOY_SKIP_CHECKS:-}" != 1 ]; then
            pnpm run --silent check >/dev/null
            pnpm run --silent test >/dev/null
        fi
        pnpm run --silent build >/dev/null
    )
fi

step "2. acquire $LOCK"
remote "set -o noclobber; echo $DEPLOYER $SCOPE \$(date -u +%FT%TZ) > $LOCK" ||
    die "another deploy holds $LOCK (remove it only if no deploy runs)"
trap unlock EXIT

release=$(date -u +%Y%m%d%H%M%S)
rel=$ROOT/releases/$release
step "3. create release $release"
# The component this deploy does not upload comes from the current release.
case "$SCOPE" in
    all) carry="" ;;
    backend) carry="cp -a $ROOT/current/frontend $rel/frontend" ;;
    frontend) carry="cp -a $ROOT/current/backend $rel/backend" ;;
esac
remote "mkdir $rel${carry:+ && $carry}"

step "4. upload $SCOPE"
upload=()
[ "$SCOPE" = frontend ] || upload+=(backend)
[ "$SCOPE" = backend ] || upload+=(frontend/build frontend/package.json)
rsync -aR --rsh="$RSYNC_RSH" \
    --exclude .venv --exclude __pycache__ --exclude .pytest_cache --exclude .ruff_cache \
    --exclude .env --exclude 'node_modules' \
    "${upload[@]}" "$SERVER:$rel/"

step "5. link shared env files"
remote "ln -sfn ../../../shared/backend/.env $rel/backend/.env &&
    ln -sfn ../../../shared/frontend/.env.production $rel/frontend/.env.production"

# The server's Python, never a downloaded one; the system's CA certificates (networks with a
# TLS-inspecting proxy); the deploy root's uv cache (the deploy user's home is root's, read-only
# to it, so uv's default cache under ~/.cache cannot be made).
if [ "$SCOPE" != frontend ]; then
    step "6. uv sync and migrations"
    remote "cd $rel/backend && UV_CACHE_DIR=$ROOT/shared/uv-cache UV_PYTHON_DOWNLOADS=never UV_SYSTEM_CERTS=1 uv sync --quiet --locked --no-dev --python /usr/bin/python3 &&
        .venv/bin/python -m alembic upgrade head"
fi

step "7. upload scripts/, systemd/, nginx/"
rsync -aR --rsh="$RSYNC_RSH" scripts systemd nginx "$SERVER:$rel/"

step "8. switch current to $release"
previous=$(remote "readlink $ROOT/current || true; ln -sfn releases/$release $ROOT/current")

rollback_to_previous() {
    echo "deploy-baseline: failed after the switch: rolling back to ${previous:-nothing}" >&2
    if [ -n "$previous" ]; then
        remote "ln -sfn $previous $ROOT/current && sudo -n systemctl restart innercontext innercontext-node innercontext-pricing-worker" || true
    fi
    remote "echo \"\$(date -u +%FT%TZ) deployer=$DEPLOYER release=$release result=rolled-back\" >> $ROOT/deploy.log" || true
    unlock
}
trap rollback_to_previous EXIT

case "$SCOPE" in
    all) restart innercontext innercontext-node innercontext-pricing-worker ;;
    backend) restart innercontext innercontext-pricing-worker ;;
    frontend) restart innercontext-node ;;
esac
health

step "11. remove old releases (keep $KEEP)"
remote "cd $ROOT/releases && ls -1 | sort -r | tail -n +$((KEEP + 1)) | while read -r old; do
    [ \"releases/\$old\" = \"\$(readlink $ROOT/current)\" ] || rm -rf \"\$old\"
done"

step "12. log and unlock"
remote "echo \"\$(date -u +%FT%TZ) deployer=$DEPLOYER release=$release scope=$SCOPE result=success\" >> $ROOT/deploy.log && rm -f $LOCK"
trap - EXIT
echo "deployed $release" >&2
