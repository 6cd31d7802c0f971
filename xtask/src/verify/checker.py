"""`cargo xtask verify`'s checker: current's release, its virtualenv and the uv cache as root.

Sent from the deployer's checkout over ssh (stdin) and run as root by `/usr/bin/python3 -I -`:
nothing the app user can write is run, imported or sourced. The deployer appends `DATA` (the
facts below, as text) and a call of `main()`. Every path under the deploy root is the app
user's: the tree is walked through directory descriptors, never following a link (`lstat`,
`O_NOFOLLOW`), and a file is read only when it is a regular file (no FIFO blocks the walk).

DATA, one fact a line, tab-separated:
  mode meta|check       meta: only name current's release and its commits
  root PATH             the deploy root
  meta NAME             the release's metadata file (its commits)
  part NAME             a part of a release (backend, frontend, ...)
  record NAME           a file the job writes at the top of a release (.state, .release, ...)
  envlink PATH TARGET   a link the job makes in a release, and where it points
  venvlink PATH DIR     the release's link to its virtualenv, and the directory of virtualenvs
  venvmarker NAME       the file the job writes into a virtualenv it built
  cache DIR             the uv cache
  want SHA256 PATH      a file this checkout ships, and its hash
  project PATH          a file uv builds the reference from (backend/uv.lock, pyproject.toml)

Output, one line each, tab-separated: `release NAME COMMIT BACKEND FRONTEND`, `took NAME
SECONDS DETAIL` (a step done), `finding PATH WHY`, `error WHY` (then exit 2). Exit 0 when
nothing was found, 1 when something was. A temp directory under /var/tmp (root's, 0700) holds
the reference; it is removed on every exit, also when the deployer goes away (its pipe closes:
a watcher notices, kills uv and removes it).

The rules:
  - the release: every file of its parts is one this checkout ships with the same SHA-256, and
    every shipped file is there; the job's own links (env files, .venv) point where the job
    points them; nothing else (a link, another file, a FIFO) is there.
  - the virtualenv: compared file by file with a reference root builds into a temp directory
    (`uv sync --locked --no-dev --no-install-project --no-build` from the release's uv.lock and
    pyproject.toml, first checked against this checkout's hashes, with a fresh temp cache: the
    wheels' hashes are the lock's). A file that embeds the virtualenv's own path (bin/ scripts,
    pyvenv.cfg) must equal the reference's with the reference's path replaced by the
    virtualenv's; a dist-info RECORD the same, but the hash and size of its bin/ rows (those
    scripts hold the path).
  - bytecode (release and virtualenv): a `__pycache__` holds only `STEM.TAG[.opt-N].pyc` of a
    `STEM.py` beside it. One that Python would load (this Python's magic; a timestamp header
    matching the source's mtime and size, or a hash header) must hold the code of the verified
    source: it is unmarshalled and compared with root's own compile of the source (code objects
    compare equal but for their file name), in a child process that gave up root first
    (nobody), since marshal is not safe against crafted data. Stale bytecode (a header that does
    not match its source) is never loaded and is not named.
  - the uv cache: every unpacked wheel (`archive-v0/ID`) of a distribution in current's lock is
    compared file by file with the same wheel unpacked by uv into the reference's fresh cache;
    an entry of a distribution the lock does not hold has no reference: only its links and its
    `.pth` files are named. uv's index and pointer files are not checked.
"""

import hashlib, os, re, shutil, signal, stat, subprocess, sys, tempfile, threading, time

FOUND = []
TEMP = []
# Where the reference is built (root's 0700 directory made by mkdtemp): on disk, not in RAM.
TEMP_DIR = "/var/tmp"
NAME_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def out(*fields):
    line = "\t".join(str(f).replace("\t", " ").replace("\n", " ") for f in fields)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def finding(path, why):
    FOUND.append((path, why))


class Stop(Exception):
    pass


def opendir(fd, name):
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)


def read(fd, name, st=None):
    """The bytes of regular file NAME in directory FD (None when it is not one, or changed)."""
    try:
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    try:
        got = os.fstat(f)
        if not stat.S_ISREG(got.st_mode) or (st and (got.st_ino, got.st_dev) != (st.st_ino, st.st_dev)):
            return None
        chunks = []
        while True:
            b = os.read(f, 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(f)


def walk(fd, rel=""):
    """(relative path, lstat, parent fd, name) of everything under FD, parents first."""
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        path = rel + e.name
        yield path, st, fd, e.name
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = opendir(fd, e.name)
            except OSError:
                finding(path, "changed while it was read")
                continue
            try:
                yield from walk(sub, path + "/")
            finally:
                os.close(sub)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def kind(st):
    m = st.st_mode
    if stat.S_ISLNK(m):
        return "a link"
    if stat.S_ISDIR(m):
        return "a directory"
    if stat.S_ISREG(m):
        return "a file"
    return "not a regular file"


# --- bytecode --------------------------------------------------------------------------------

PYC_RE = None


def pyc_source(path):
    """`dir/STEM.py` for `dir/__pycache__/STEM.TAG[.opt-N].pyc` of this Python, else None."""
    global PYC_RE
    if PYC_RE is None:
        tag = re.escape(sys.implementation.cache_tag)
        PYC_RE = re.compile(r"^(.*/)?__pycache__/([^/]+)\." + tag + r"(\.opt-[12])?\.pyc$")
    m = PYC_RE.match(path)
    if not m:
        return None, None
    return (m.group(1) or "") + m.group(2) + ".py", (int(m.group(3)[5:]) if m.group(3) else 0)


def loaded(header, source, st):
    """Whether Python would use bytecode with HEADER (16 bytes) for SOURCE (bytes, lstat)."""
    import importlib.util, _imp
    from importlib._bootstrap_external import _RAW_MAGIC_NUMBER
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(header[4:8], "little")
    if flags & ~0b11:
        return False  # invalid flags: Python compiles the source instead
    if flags == 0:
        return (int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)
    if flags & 2:
        return header[8:16] == _imp.source_hash(_RAW_MAGIC_NUMBER, source)
    return True  # unchecked hash-based bytecode: always used


def same_code(cases):
    """For each (source, pyc bytes, optimize): whether the pyc's code is the source's, decided
    in a child that gave up root (marshal is not safe against crafted data)."""
    if not cases:
        return []
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if os.geteuid() == 0:  # always, but in the unit tests
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            import marshal, resource
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
            with os.fdopen(w, "w") as f:
                for source, pyc, opt in cases:
                    try:
                        code = marshal.loads(pyc[16:])
                        ok = code == compile(source, "<verified>", "exec", dont_inherit=True, optimize=opt)
                    except Exception:
                        ok = False
                    f.write("same\n" if ok else "differs\n")
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        said = f.read(len(cases) * 8 + 16).splitlines()
    os.waitpid(pid, 0)
    return [i < len(said) and said[i] == "same" for i in range(len(cases))]


class Bytecode:
    """The pycs met during a walk, checked at the end against the sources met."""

    def __init__(self):
        self.pycs = []  # (shown path, source rel path, header+body, opt)
        self.sources = {}  # rel path -> (bytes, lstat), for verified sources only
        self.named = set()  # sources named as findings already (their bytecode is not named)

    def met(self, shown, rel, data):
        src, opt = pyc_source(rel)
        if src is None:
            finding(shown, "in __pycache__ but not this Python's bytecode of a source")
        else:
            self.pycs.append((shown, src, data, opt))

    def check(self):
        cases, who = [], []
        for shown, src, data, opt in self.pycs:
            got = self.sources.get(src)
            if src in self.named:
                continue
            if got is None:
                finding(shown, "bytecode of no verified source")
            elif loaded(data[:16], got[0], got[1]):
                cases.append((got[0], data, opt))
                who.append(shown)
        for shown, ok in zip(who, same_code(cases)):
            if not ok:
                finding(shown, "bytecode that is not its source's")


# --- the release -----------------------------------------------------------------------------

def facts(lines):
    f = {"part": [], "record": [], "envlink": {}, "want": {}, "project": []}
    for line in lines:
        k, _, v = line.partition("\t")
        if k in ("part", "record", "project"):
            f[k].append(v)
        elif k == "envlink":
            p, t = v.split("\t")
            f["envlink"][p] = t
        elif k == "want":
            h, p = v.split("\t", 1)
            f["want"][p] = h
        elif k == "venvlink":
            f["venvlink"], f["venvs"] = v.split("\t")
        elif k:
            f[k] = v
    return f


def current(f, rootfd):
    try:
        link = os.readlink("current", dir_fd=rootfd)
    except OSError:
        raise Stop(f"{f['root']}/current is not a link to a release: nothing is deployed there (cargo xtask deploy)")
    name = link[len("releases/"):] if link.startswith("releases/") else ""
    if not NAME_RE.match(name):
        raise Stop(f"{f['root']}/current points to '{link}', not to releases/NAME: fix it with cargo xtask rollback or deploy")
    relfd = opendir(opendir(rootfd, "releases"), name)
    meta = {}
    for line in (read(relfd, f["meta"]) or b"").decode("utf-8", "replace").splitlines():
        k, _, v = line.partition("=")
        meta[k] = v
    return name, relfd, meta


def check_release(f, rootfd, name, relfd, bytecode):
    base = f"{f['root']}/releases/{name}/"
    want, parts = f["want"], set(f["part"])
    seen, venv = set(), None
    for path, st, fd, entry in walk(relfd):
        shown = base + path
        top = "/" not in path
        if top:
            if path in parts:
                if not stat.S_ISDIR(st.st_mode):
                    finding(shown, f"{kind(st)}, not the release's {path} directory")
            elif path in f["record"]:
                if not stat.S_ISREG(st.st_mode):
                    finding(shown, f"{kind(st)}, not the job's record")
            else:
                finding(shown, "not shipped (not a part of a release)")
            continue
        if path.split("/", 1)[0] not in parts:
            continue  # under a record or a stray top entry, named above
        if path in f["envlink"] or path == f["venvlink"]:
            target = os.readlink(entry, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
            if path == f["venvlink"]:
                prefix = f"../../../{f['venvs']}/"
                tail = (target or "")[len(prefix):]
                if target and target.startswith(prefix) and re.match(r"^[0-9a-f]+(\.[0-9]{8}T[0-9]{6}Z)?$", tail):
                    venv = tail
                else:
                    finding(shown, f"not the job's link to a virtualenv ({kind(st)}{' to ' + target if target else ''})")
            elif target != f["envlink"][path]:
                finding(shown, f"not the job's link to {f['envlink'][path]} ({kind(st)}{' to ' + target if target else ''})")
            continue
        if "/__pycache__/" in path or path.endswith("/__pycache__"):
            if stat.S_ISDIR(st.st_mode) and path.endswith("/__pycache__"):
                continue
            data = read(fd, entry, st) if stat.S_ISREG(st.st_mode) else None
            if data is None:
                finding(shown, f"{kind(st)} in a __pycache__")
            else:
                bytecode.met(shown, path, data)
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            finding(shown, f"{kind(st)}, not shipped (a release ships regular files)")
            continue
        if path not in want:
            finding(shown, "not shipped by this checkout")
            bytecode.named.add(path)
            continue
        seen.add(path)
        data = read(fd, entry, st)
        if data is None or sha256(data) != want[path]:
            finding(shown, "differs from this checkout")
            bytecode.named.add(path)
        elif path.endswith(".py"):
            bytecode.sources[path] = (data, st)
    for path in sorted(set(want) - seen):
        finding(base + path, "missing (this checkout ships it)")
    return venv


# --- the reference ---------------------------------------------------------------------------

def reference(f, relfd, tmp):
    """Build the reference virtualenv and cache in TMP from the release's project files, each
    first copied into TMP and checked against this checkout's hashes."""
    proj = os.path.join(tmp, "project")
    os.mkdir(proj, 0o700)
    for path in f["project"]:
        d = relfd
        parts = path.split("/")
        fds = []
        try:
            for p in parts[:-1]:
                d = opendir(d, p)
                fds.append(d)
            data = read(d, parts[-1])
        finally:
            for x in fds:
                os.close(x)
        if data is None or sha256(data) != f["want"].get(path):
            raise Stop(f"current's {path} is not this checkout's: the reference virtualenv cannot be built from it (named above)")
        with open(os.path.join(proj, parts[-1]), "wb") as fh:
            fh.write(data)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": tmp,
        "UV_CACHE_DIR": os.path.join(tmp, "cache"),
        "UV_PROJECT_ENVIRONMENT": os.path.join(tmp, "venv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
        "UV_SYSTEM_CERTS": "1",
        "UV_LINK_MODE": "hardlink",
    }
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "SSL_CERT_FILE"):
        if k in os.environ:
            env[k] = os.environ[k]
    proc = subprocess.Popen(
        ["/usr/local/bin/uv", "sync", "--locked", "--no-dev", "--no-install-project", "--no-build",
         "--no-progress", "--quiet", "--python", "/usr/bin/python3"],
        cwd=proj, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    TEMP.append(proc)
    said = proc.communicate()[0].decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0:
        raise Stop("uv could not build the reference virtualenv from current's uv.lock: " + (said[-1] if said else f"exit {proc.returncode}"))
    return os.path.join(tmp, "venv"), os.path.join(tmp, "cache")


def tree(path):
    """{relative path: (lstat, fd-less bytes or link target)} of a root-owned tree (the reference)."""
    got = {}
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for rel, st, d, name in walk(fd):
            if stat.S_ISLNK(st.st_mode):
                got[rel] = (st, os.readlink(name, dir_fd=d))
            elif stat.S_ISREG(st.st_mode):
                got[rel] = (st, sha256(read(d, name, st) or b""))
            else:
                got[rel] = (st, None)
    finally:
        os.close(fd)
    return got


# --- the virtualenv --------------------------------------------------------------------------

def record_rows(data):
    import csv, io
    rows = {}
    for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))):
        if row:
            rows[row[0]] = tuple(row[1:]) if not row[0].startswith("../../../bin/") else ()
    return rows


def check_venv(f, rootfd, name, refdir, bytecode):
    base = f"{f['root']}/{f['venvs']}/{name}"
    ref = tree(refdir)
    fds = []
    d = rootfd
    for p in f["venvs"].split("/") + [name]:
        d = opendir(d, p)
        fds.append(d)
    here, there = refdir.encode(), base.encode()
    seen = set()
    try:
        for path, st, fd, entry in walk(d):
            shown = f"{base}/{path}"
            if path == f["venvmarker"]:
                continue
            if "/__pycache__" in "/" + path:
                if stat.S_ISDIR(st.st_mode) and path.endswith("__pycache__"):
                    continue
                data = read(fd, entry, st) if stat.S_ISREG(st.st_mode) else None
                if data is None:
                    finding(shown, f"{kind(st)} in a __pycache__")
                else:
                    bytecode.met(shown, path, data)
                continue
            r = ref.get(path)
            if r is None:
                finding(shown, "installed by no package (not in the reference)")
                bytecode.named.add(path)
                continue
            seen.add(path)
            rst, rval = r
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(rst.st_mode):
                finding(shown, f"{kind(st)}, the reference has {kind(rst)}")
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry, dir_fd=fd)
                if target != rval and target != rval.replace(refdir, base):
                    finding(shown, f"a link to {target}, the reference's is to {rval}")
            elif stat.S_ISREG(st.st_mode):
                data = read(fd, entry, st)
                if data is None:
                    finding(shown, "changed while it was read")
                elif sha256(data) == rval:
                    if path.endswith(".py"):
                        bytecode.sources[path] = (data, st)
                else:
                    want = read_ref(refdir, path)
                    same = want.replace(here, there) == data
                    if not same and path.endswith(".dist-info/RECORD"):
                        same = record_rows(want) == record_rows(data)
                    if not same:
                        finding(shown, "differs from the reference")
                        bytecode.named.add(path)
                    elif path.endswith(".py"):
                        bytecode.sources[path] = (data, st)
        for path in sorted(set(ref) - seen):
            if "__pycache__" not in path:
                finding(f"{base}/{path}", "missing (the reference has it)")
    finally:
        for x in fds:
            os.close(x)


def read_ref(refdir, path):
    with open(os.path.join(refdir, path), "rb") as fh:
        return fh.read()


# --- the uv cache ----------------------------------------------------------------------------

def dist_infos(fd):
    with os.scandir(fd) as it:
        return sorted(e.name for e in it if e.name.endswith(".dist-info") and e.is_dir(follow_symlinks=False))


def check_cache(f, rootfd, refcache):
    base = f"{f['root']}/{f['cache']}/archive-v0"
    refs = {}
    rfd = os.open(os.path.join(refcache, "archive-v0"), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for e in sorted(os.scandir(rfd), key=lambda e: e.name):
            if e.is_dir(follow_symlinks=False):
                sub = opendir(rfd, e.name)
                try:
                    for di in dist_infos(sub):
                        refs[di] = os.path.join(refcache, "archive-v0", e.name)
                finally:
                    os.close(sub)
    finally:
        os.close(rfd)
    fds, d = [], rootfd
    compared = other = 0
    try:
        for p in f["cache"].split("/") + ["archive-v0"]:
            try:
                d = opendir(d, p)
            except FileNotFoundError:
                return 0, 0
            fds.append(d)
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            st = e.stat(follow_symlinks=False)
            shown = f"{base}/{e.name}"
            if not stat.S_ISDIR(st.st_mode):
                finding(shown, f"{kind(st)}, not an unpacked wheel")
                continue
            sub = opendir(d, e.name)
            try:
                infos = dist_infos(sub)
                ref = next((refs[i] for i in infos if i in refs), None)
                if ref is None:
                    other += 1
                    for path, st2, _, _ in walk(sub):
                        if stat.S_ISLNK(st2.st_mode):
                            finding(f"{shown}/{path}", "a link")
                        elif path.endswith(".pth"):
                            finding(f"{shown}/{path}", "a .pth file in a wheel current's lock does not hold")
                    continue
                compared += 1
                want = tree(ref)
                seen = set()
                for path, st2, fd2, name in walk(sub):
                    r = want.get(path)
                    if r is None:
                        finding(f"{shown}/{path}", f"in no wheel of {infos[0][:-len('.dist-info')]}")
                        continue
                    seen.add(path)
                    if stat.S_IFMT(st2.st_mode) != stat.S_IFMT(r[0].st_mode):
                        finding(f"{shown}/{path}", f"{kind(st2)}, the wheel has {kind(r[0])}")
                    elif stat.S_ISREG(st2.st_mode):
                        data = read(fd2, name, st2)
                        if data is None or sha256(data) != r[1]:
                            finding(f"{shown}/{path}", "differs from the wheel")
                for path in sorted(set(want) - seen):
                    finding(f"{shown}/{path}", "missing (the wheel has it)")
            finally:
                os.close(sub)
    finally:
        for x in fds:
            os.close(x)
    return compared, other


# --- the run ---------------------------------------------------------------------------------

def cleanup():
    for p in TEMP:
        if isinstance(p, str):
            shutil.rmtree(p, ignore_errors=True)
        elif p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


def watch_deployer():
    """Clean up and exit when the deployer is gone (our stdout's reader closed it)."""
    import select
    p = select.poll()
    p.register(1, select.POLLERR | select.POLLHUP)
    while True:
        if p.poll(500):
            cleanup()
            os._exit(3)


def step(name, started, detail=""):
    out("took", name, f"{time.monotonic() - started:.2f}", detail)


def main():
    f = facts(DATA.splitlines())
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, lambda *_: (cleanup(), os._exit(3)))
    threading.Thread(target=watch_deployer, daemon=True).start()
    if os.geteuid() != 0:
        out("error", "the checker does not run as root (the admin login needs root or passwordless sudo)")
        sys.exit(2)
    try:
        rootfd = os.open(f["root"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        name, relfd, meta = current(f, rootfd)
        out("release", name, meta.get("commit", "-"), meta.get("backend_commit", "-"), meta.get("frontend_commit", "-"))
        if f["mode"] == "meta":
            return 0
        bytecode = Bytecode()
        t = time.monotonic()
        venv = check_release(f, rootfd, name, relfd, bytecode)
        step("current's release", t, f"{len(f['want'])} files")
        t = time.monotonic()
        tmp = tempfile.mkdtemp(prefix="innercontext-verify-", dir=TEMP_DIR)
        TEMP.append(tmp)
        refvenv, refcache = reference(f, relfd, tmp)
        step("reference virtualenv (uv sync --no-build)", t)
        t = time.monotonic()
        if venv is None:
            finding(f"{f['root']}/releases/{name}/{f['venvlink']}", "no virtualenv linked: not checked")
        else:
            check_venv(f, rootfd, venv, refvenv, bytecode)
        bytecode.check()
        step("the virtualenv and bytecode", t, venv or "none")
        t = time.monotonic()
        compared, other = check_cache(f, rootfd, refcache)
        step("the uv cache", t, f"{compared} wheels of the lock compared, {other} of other packages not")
    except Stop as e:
        for path, why in FOUND:
            out("finding", path, why)
        out("error", str(e))
        return 2
    except OSError as e:
        for path, why in FOUND:
            out("finding", path, why)
        out("error", f"reading {e.filename or f['root']} failed: {e.strerror}")
        return 2
    finally:
        cleanup()
    for path, why in FOUND:
        out("finding", path, why)
    return 1 if FOUND else 0
