# shellcheck shell=bash
# What a new release may take over from the server, checked against what the deployer knows
# (nothing the app user wrote is trusted: it can forge sizes, times and any record on the host):
#   - seed_compare: the files the seed linked from current, hashed (SHA-256) and compared with
#     the hashes the deployer computed from the files it ships; those that differ are taken out
#     of the release (the deployer sends them, and names them);
#   - venv_check: a virtualenv against what uv installed (scripts/venv-check.py).

if [ -z "${C_APP_USER:-}" ]; then
    # shellcheck source=scripts/deploy-lib.sh
    . "$(dirname -- "${BASH_SOURCE[0]}")/deploy-lib.sh"
fi

# The first line of WANT that is not `SHA256  PATH` with PATH inside a release's parts (no
# `.`/`..` part, no control character, no backslash: sha256sum would escape it); '' when none.
hashes_problem() { # WANT
    awk '!(substr($0, 1, 64) ~ /^[0-9a-f]+$/ && substr($0, 65) ~ /^  (backend|frontend|scripts|systemd|nginx)\//) ||
        /(^|\/)\.\.?(\/|$)/ || /[[:cntrl:]\\]/ { print; exit }' "$1"
}

# seed_compare REL WANT: WANT (an absolute path) holds `SHA256  PATH` lines that passed
# hashes_problem; prints the path of every listed file of REL that is not a regular file with
# that hash, after removing it from REL.
seed_compare() { # REL WANT
    local rel=$1 want=$2
    (
        cd "$rel" || exit 1
        cut -c67- "$want" | hash_files | LC_ALL=C sort >"$want.have"
        LC_ALL=C sort "$want" | LC_ALL=C comm -23 - "$want.have" | cut -c67- |
            while IFS= read -r f; do
                rm -rf -- "$f"
                printf '%s\n' "$f"
            done
    )
    rm -f -- "$want.have"
}

# sha256sum's lines for the regular files among the paths on stdin (one a line; a link or a
# missing file is left out), by the system's Python: OpenSSL's SHA-256 uses the CPU's SHA
# instructions, coreutils' sha256sum does not (four times slower on the bench's 500 MB).
hash_files() {
    /usr/bin/python3 -I -c '
import hashlib, os, stat, sys
from concurrent.futures import ThreadPoolExecutor
def digest(path):
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
paths = sys.stdin.read().splitlines()
with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
    for path, hex in zip(paths, pool.map(digest, paths)):
        if hex:
            print(f"{hex}  {path}")
'
}

# venv_check VENV REFERENCE: scripts/venv-check.py of this release (compared with the
# deployer's hashes by now) run by the system's Python; see there (REFERENCE: where it makes a
# fresh `uv venv` if it needs one, at most once per job).
venv_check() { # VENV REFERENCE
    /usr/bin/python3 -I "$rel/scripts/venv-check.py" "$1" "$2"
}
