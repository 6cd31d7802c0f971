"""Whether a virtualenv is as uv installed it, read with the system's Python.

Run by the deploy job (scripts/deploy-seal.sh, venv_check) as `/usr/bin/python3 -I
venv-check.py VENV REFERENCE`, never with the virtualenv's own Python, which could lie. Prints
each file that is not as installed (`PATH: why`, relative to VENV) and exits 1; 0 when it is as
installed; 2 when it could not be read. As installed: every file a dist-info RECORD lists with
a hash has that hash (sha256, base64url, unpadded); no `.py` or `.pth` in site-packages that no
RECORD lists, unless uv itself writes it into every virtualenv (the same file in REFERENCE, a
fresh `uv venv` made there when such a file is first met); no link in site-packages; bin/python* link to this Python; pyvenv.cfg's home
is this Python's directory and leaves the system's site-packages out. Not covered: bytecode
(`__pycache__`), which no RECORD lists.
"""

import base64, csv, hashlib, os, stat, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

venv, ref = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2])
bad = []


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def rel(path):
    return os.path.relpath(path, venv)


def reference_site_packages():
    """site-packages of a fresh `uv venv` in REFERENCE (made on first use)."""
    if not os.path.isfile(os.path.join(ref, "pyvenv.cfg")):
        subprocess.run(["uv", "venv", "--no-cache", "--quiet", "--no-project", "--python", sys.executable, ref],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"))
    return site_packages(ref)


def site_packages(root):
    lib = os.path.join(root, "lib")
    found = [os.path.join(lib, d, "site-packages") for d in sorted(os.listdir(lib))
             if d.startswith("python")]
    if len(found) != 1:
        raise ValueError(f"{root}: expected one lib/python*/site-packages, found {len(found)}")
    return found[0]


try:
    sp = site_packages(venv)
    listed, hashed = set(), []
    for entry in sorted(os.scandir(sp), key=lambda e: e.name):
        if not entry.name.endswith(".dist-info") or entry.is_symlink():
            continue
        record = os.path.join(entry.path, "RECORD")
        listed.add(record)
        with open(record, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if not row:
                    continue
                path = os.path.normpath(os.path.join(sp, row[0]))
                listed.add(path)
                if len(row) < 2 or not row[1]:
                    continue
                algo, _, want = row[1].partition("=")
                if not path.startswith(venv + os.sep):
                    bad.append(f"{row[0]}: listed outside the virtualenv")
                elif algo != "sha256":
                    bad.append(f"{rel(path)}: hashed with {algo}, not sha256")
                else:
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        bad.append(f"{rel(path)}: missing")
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        bad.append(f"{rel(path)}: not a regular file")
                    else:
                        hashed.append((path, want))
    # hashlib lets go of the interpreter's lock on large files: the big ones hash side by side.
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        for (path, want), got in zip(hashed, pool.map(digest, [p for p, _ in hashed])):
            if got != want:
                bad.append(f"{rel(path)}: changed")
    for top, dirs, files in os.walk(sp):
        for name in dirs + files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                bad.append(f"{rel(path)}: a link")
            elif name in files and name.endswith((".py", ".pth")) and path not in listed:
                same = os.path.join(reference_site_packages(), os.path.relpath(path, sp))
                if not (os.path.isfile(same) and not os.path.islink(same)
                        and digest(same) == digest(path)):
                    bad.append(f"{rel(path)}: installed by no package")
    python = os.path.realpath(sys.executable)
    bindir = os.path.join(venv, "bin")
    for name in sorted(os.listdir(bindir)):
        path = os.path.join(bindir, name)
        if name.startswith("python") and (not os.path.islink(path)
                                          or os.path.realpath(path) != python):
            bad.append(f"{rel(path)}: not a link to {python}")
    with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
        cfg = dict(line.split("=", 1) for line in f if "=" in line)
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    if cfg.get("home") != os.path.dirname(sys.executable):
        bad.append(f"pyvenv.cfg: home is {cfg.get('home')}, not {os.path.dirname(sys.executable)}")
    if cfg.get("include-system-site-packages", "false") != "false":
        bad.append("pyvenv.cfg: includes the system's site-packages")
except (OSError, ValueError, csv.Error, subprocess.CalledProcessError) as e:
    print(f"reading {venv} failed: {e}")
    sys.exit(2)
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
