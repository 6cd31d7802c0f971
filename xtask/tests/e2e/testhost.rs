//! The test host itself: two machines at once, strict ssh host keys, PostgreSQL reached from
//! the app machine, the latency proxy, crash safety, and nothing left behind by `down`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use xshell::Shell;
use xtask::flags::Role;
use xtask::testhost::{self as th, Machine};

use crate::{app_name, db_name, machine_name, Ctx};

/// Run ssh with the machine's config plus `extra` options; (success, stdout, stderr).
fn ssh(m: &Machine, extra: &[&str], argv: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new("ssh")
        .arg("-F")
        .arg(m.ssh_config.as_str())
        .args(extra)
        .arg(&m.name)
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ssh")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn host_keys(m: &Machine) -> Result<Vec<String>> {
    Ok(fs_err::read_to_string(&m.known_hosts)?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect())
}

pub fn two_machines_boot_in_parallel(ctx: &mut Ctx) -> Result<()> {
    let start = Instant::now();
    let ms = ctx.machines()?;
    let took = start.elapsed();
    let (app, db) = (&ms.app, &ms.db);
    ensure!(app.role == Role::App && db.role == Role::Db);
    ensure!(app.ip != db.ip, "both machines got {}", app.ip);
    for m in [app, db] {
        ensure!(
            m.ip.starts_with("10.213.") && m.ip.ends_with(".2"),
            "unexpected address {}",
            m.ip
        );
        let net =
            m.ip.rsplit_once('.')
                .map(|(net, _)| net)
                .unwrap_or_default();
        ensure!(m.host_ip == format!("{net}.1"), "{} vs {}", m.host_ip, m.ip);
        ensure!(
            th::machine(&m.name)? == *m,
            "machine({}) differs from up()",
            m.name
        );
    }
    let names: Vec<String> = th::list()?.into_iter().map(|m| m.name).collect();
    ensure!(
        names.contains(&app_name()) && names.contains(&db_name()),
        "list() = {names:?}"
    );
    // Each machine has host keys of its own.
    let (ka, kd) = (host_keys(app)?, host_keys(db)?);
    ensure!(!ka.is_empty() && !kd.is_empty(), "empty known_hosts");
    ensure!(
        ka.iter().all(|k| !kd.contains(k)),
        "the machines share a host key"
    );
    println!(
        "      booted {} and {} in {:.1}s",
        app_name(),
        db_name(),
        took.as_secs_f64()
    );
    Ok(())
}

pub fn ssh_checks_host_keys_strictly(ctx: &mut Ctx) -> Result<()> {
    let ms = ctx.machines()?;
    let (app, db) = (&ms.app, &ms.db);
    for m in [app, db] {
        let (ok, out, err) = ssh(m, &[], &["systemctl", "is-system-running"])?;
        ensure!(
            ok && out.trim() == "running",
            "{}: '{}' {err}",
            m.name,
            out.trim()
        );
        let (ok, out, _) = ssh(m, &[], &["id", "-un"])?;
        ensure!(ok && out.trim() == "root");
    }
    let config = fs_err::read_to_string(&app.ssh_config)?;
    for line in [
        "StrictHostKeyChecking yes".to_string(),
        format!("HostKeyAlias {}", app_name()),
        "User root".to_string(),
    ] {
        ensure!(
            config.contains(&line),
            "ssh_config lacks '{line}':\n{config}"
        );
    }
    let dir = std::env::temp_dir().join(format!("e2e-known-hosts-{}", std::process::id()));
    fs_err::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        // The db machine's keys under the app machine's name: a changed host key.
        let wrong = dir.join("wrong");
        let db_keys = fs_err::read_to_string(&db.known_hosts)?;
        fs_err::write(
            &wrong,
            db_keys.replace(&format!("{},{}", db_name(), db.ip), &app_name()),
        )?;
        let opt = format!("UserKnownHostsFile={}", wrong.display());
        let (ok, _, err) = ssh(app, &["-o", &opt], &["true"])?;
        ensure!(!ok, "ssh accepted the wrong host key");
        // The changed-key warning itself: an unknown key also ends in "Host key verification
        // failed", so that line alone would not show the key was compared.
        ensure!(
            err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
            "ssh did not report a changed host key: {err}"
        );
        // An unknown host is refused too, not added.
        let empty = dir.join("empty");
        fs_err::write(&empty, "")?;
        let opt = format!("UserKnownHostsFile={}", empty.display());
        let (ok, _, err) = ssh(app, &["-o", &opt], &["true"])?;
        ensure!(!ok, "ssh accepted an unknown host key");
        ensure!(
            err.contains("Host key verification failed"),
            "unexpected ssh error: {err}"
        );
        ensure!(
            fs_err::read_to_string(&empty)?.is_empty(),
            "ssh added the key"
        );
        Ok(())
    })();
    let _ = fs_err::remove_dir_all(&dir);
    result
}

pub fn image_is_a_fresh_server(ctx: &mut Ctx) -> Result<()> {
    let ms = ctx.machines()?;
    let (app, db) = (&ms.app, &ms.db);
    // What a fresh Debian 12 container has, and what setup-server must add itself.
    let probe = "for c in sshd sudo curl python3 systemctl; do command -v $c >/dev/null || echo missing:$c; done; \
                 for c in nginx uv node pnpm psql; do command -v $c >/dev/null && echo present:$c; done; \
                 id innercontext >/dev/null 2>&1 && echo present:user; \
                 test -e /opt/innercontext && echo present:/opt/innercontext; \
                 dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'ok installed' && echo present:postgresql; \
                 grep -q bookworm-updates /etc/apt/sources.list.d/debian.sources || echo missing:updates; \
                 grep -q bookworm-security /etc/apt/sources.list.d/debian.sources || echo missing:security; \
                 test \"$(cat /proc/1/comm)\" = systemd || echo missing:systemd-pid1; \
                 echo hostname:$(hostname) machine-id:$(cat /etc/machine-id)";
    let out = app.ssh(&["bash", "-c", probe])?;
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("missing:") || l.starts_with("present:"))
        .collect();
    ensure!(problems.is_empty(), "app image: {problems:?}");
    ensure!(out.contains(&format!("hostname:{} ", app_name())), "{out}");
    let db_out = db.ssh(&["bash", "-c", probe])?;
    ensure!(
        db_out.contains("present:postgresql") && db_out.contains("present:psql"),
        "db machine lacks PostgreSQL: {db_out}"
    );
    let id = |o: &str| {
        o.rsplit("machine-id:")
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    ensure!(
        id(&out) != id(&db_out) && id(&out).len() == 32,
        "machine-ids: {out} / {db_out}"
    );
    // sudo resolves the host name (libnss-myhostname) and works without a terminal.
    let out = app.ssh(&["sudo", "-n", "true"]);
    ensure!(out.is_ok(), "sudo: {out:?}");
    // The host's CA certificates are trusted inside (TLS-inspecting proxies).
    for entry in fs_err::read_dir("/usr/local/share/ca-certificates")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt") {
            let pem = fs_err::read_to_string(&path)?;
            let line = pem
                .lines()
                .find(|l| !l.starts_with("-----") && l.len() > 40)
                .context("no base64 line in the CA file")?;
            let found = app.ssh(&[
                "grep",
                "-c",
                "-F",
                line,
                "/etc/ssl/certs/ca-certificates.crt",
            ]);
            ensure!(
                found.is_ok(),
                "{} is not trusted inside: {found:?}",
                path.display()
            );
        }
    }
    Ok(())
}

/// A PostgreSQL client in the Python standard library: startup, SCRAM-SHA-256, one query.
/// argv: host port user password database; prints `user|client address`.
const PG_CLIENT: &str = r#"
import base64, hashlib, hmac, os, socket, struct, sys
host, port, user, password, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection((host, port), 5)
def send(tag, payload):
    s.sendall(tag + struct.pack('!I', len(payload) + 4) + payload)
def recv_exact(n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit('connection closed')
        b += c
    return b
def recv():
    tag = recv_exact(1)
    n = struct.unpack('!I', recv_exact(4))[0]
    body = recv_exact(n - 4)
    if tag == b'E':
        sys.exit('server error: ' + body.decode(errors='replace'))
    return tag, body
def auth(body):
    return struct.unpack('!I', body[:4])[0]
send(b'', struct.pack('!I', 196608) + b'user\0' + user.encode() + b'\0database\0' + db.encode() + b'\0\0')
tag, body = recv()
assert tag == b'R' and auth(body) == 10, ('expected SASL', tag, body)
nonce = base64.b64encode(os.urandom(18)).decode()
first_bare = 'n=,r=' + nonce
first = ('n,,' + first_bare).encode()
send(b'p', b'SCRAM-SHA-256\0' + struct.pack('!I', len(first)) + first)
tag, body = recv()
assert tag == b'R' and auth(body) == 11, ('expected SASL continue', tag, body)
server_first = body[4:].decode()
attrs = dict(kv.split('=', 1) for kv in server_first.split(','))
salted = hashlib.pbkdf2_hmac('sha256', password.encode(), base64.b64decode(attrs['s']), int(attrs['i']))
client_key = hmac.new(salted, b'Client Key', 'sha256').digest()
final_bare = 'c=biws,r=' + attrs['r']
auth_msg = ','.join([first_bare, server_first, final_bare]).encode()
sig = hmac.new(hashlib.sha256(client_key).digest(), auth_msg, 'sha256').digest()
proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
send(b'p', (final_bare + ',p=' + proof).encode())
tag, body = recv()
assert tag == b'R' and auth(body) == 12, ('expected SASL final', tag, body)
server_key = hmac.new(salted, b'Server Key', 'sha256').digest()
assert body[4:].decode() == 'v=' + base64.b64encode(hmac.new(server_key, auth_msg, 'sha256').digest()).decode(), 'bad server signature'
while tag != b'Z':
    tag, body = recv()
send(b'Q', b'select current_user, host(inet_client_addr())\0')
row = None
while True:
    tag, body = recv()
    if tag == b'D':
        n = struct.unpack('!H', body[:2])[0]
        pos, cols = 2, []
        for _ in range(n):
            ln = struct.unpack('!i', body[pos:pos + 4])[0]
            cols.append(body[pos + 4:pos + 4 + ln].decode())
            pos += 4 + ln
        row = cols
    if tag == b'Z':
        break
send(b'X', b'')
print('|'.join(row))
"#;

/// A `primed` machine (what most groups boot) is a fresh host plus what setup-server's
/// `packages` and `uv` steps would install, exactly: each of setup-server's packages installed,
/// its uv version at /usr/local/bin/uv, and nothing else of setup-server's (no app user, no
/// node, no /opt/innercontext). Otherwise every group would pay apt again, or skip a step.
pub fn primed_machine_has_setup_servers_packages_only(_ctx: &mut Ctx) -> Result<()> {
    let name = machine_name("primed");
    let m = th::up(&Shell::new()?, &name, Role::Primed)?;
    let result = (|| -> Result<()> {
        let mut probe = String::new();
        for p in xtask::setup_server::PACKAGES {
            probe.push_str(&format!(
                "dpkg-query -W -f='${{Status}}\\n' {p} 2>/dev/null | grep -qx 'install ok installed' || echo missing:{p}; "
            ));
        }
        probe.push_str(
            "echo uv:$(/usr/local/bin/uv --version 2>&1); \
             command -v node >/dev/null && echo present:node; \
             id innercontext >/dev/null 2>&1 && echo present:user; \
             test -e /opt/innercontext && echo present:/opt/innercontext; \
             systemctl is-system-running --wait >/dev/null 2>&1 || echo degraded:$(systemctl --failed --plain --no-legend | head -3)",
        );
        let out = m.ssh(&["bash", "-c", &probe])?;
        let wrong: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.starts_with("missing:") || l.starts_with("present:") || l.starts_with("degraded:")
            })
            .collect();
        ensure!(wrong.is_empty(), "primed machine {name}: {wrong:?}\n{out}");
        let uv = format!("uv:uv {} ", xtask::tools::UV_VERSION);
        ensure!(
            out.lines().any(|l| format!("{l} ").starts_with(&uv)),
            "primed machine {name} has no uv {}: {out}",
            xtask::tools::UV_VERSION
        );
        Ok(())
    })();
    th::down(&Shell::new()?, &name)?;
    result
}

pub fn app_logs_in_to_postgres_on_db(ctx: &mut Ctx) -> Result<()> {
    let ms = ctx.machines()?;
    let (app, db) = (&ms.app, &ms.db);
    let info = th::db_info(db);
    ensure!(info.host == db.ip && info.port == 5432);
    ensure!(info.database == "innercontext" && info.user == "innercontext");
    ensure!(
        info.url()
            == format!(
                "postgresql+psycopg://innercontext:{}@{}/innercontext",
                info.password, db.ip
            )
    );
    let port = info.port.to_string();
    let login = |password: &str| {
        app.ssh(&[
            "python3",
            "-c",
            PG_CLIENT,
            &info.host,
            &port,
            &info.user,
            password,
            &info.database,
        ])
    };
    // From the app machine, over both veths, with the password: the client address is the
    // app machine's own (no NAT between machines).
    let out = login(&info.password)?;
    ensure!(
        out.trim() == format!("innercontext|{}", app.ip),
        "query answered '{}'",
        out.trim()
    );
    // A wrong password is refused: the login above proved the password, not just the route.
    let err = login("not-the-password").expect_err("a wrong password was accepted");
    ensure!(
        format!("{err:#}").contains("password authentication failed"),
        "unexpected error: {err:#}"
    );
    // PostgreSQL listens on the machine's veth address, per the spec's DATABASE_URL.
    let listening = db.ssh(&["pg_isready", "-h", &db.ip, "-p", &port])?;
    ensure!(listening.contains("accepting connections"), "{listening}");
    Ok(())
}

pub fn exec_runs_inside_the_machine(ctx: &mut Ctx) -> Result<()> {
    ctx.machines()?;
    let sh = Shell::new()?;
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let host = th::exec(&sh, &app_name(), &argv(&["hostname"]))?;
    ensure!(host.trim() == app_name(), "hostname inside: {host}");
    let init = th::exec(&sh, &app_name(), &argv(&["cat", "/proc/1/comm"]))?;
    ensure!(init.trim() == "systemd", "PID 1 inside: {init}");
    let addr = th::exec(
        &sh,
        &db_name(),
        &argv(&["ip", "-4", "-o", "addr", "show", "host0"]),
    )?;
    ensure!(addr.contains(&th::machine(&db_name())?.ip), "{addr}");
    let err = th::exec(
        &sh,
        &app_name(),
        &argv(&["sh", "-c", "echo oops >&2; exit 3"]),
    )
    .expect_err("a failing command succeeded");
    ensure!(
        format!("{err:#}").contains("oops"),
        "stderr not reported: {err:#}"
    );
    Ok(())
}

/// The fastest of `n` ssh logins plus one command: new connections, no master.
fn ssh_round_trip(m: &Machine, n: usize) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        let start = Instant::now();
        let (ok, _, err) = ssh(m, &[], &["true"])?;
        ensure!(ok, "ssh to {} failed: {err}", m.name);
        best = best.min(start.elapsed());
    }
    Ok(best)
}

pub fn delay_adds_latency_to_ssh(ctx: &mut Ctx) -> Result<()> {
    let app = ctx.machines()?.app.clone();
    let sh = Shell::new()?;
    let delay_ms = 100;
    let direct = ssh_round_trip(&app, 3)?;
    th::delay(&sh, &app_name(), delay_ms)?;
    let result = (|| -> Result<Duration> {
        ensure!(th::current_delay(&app_name()) == Some(delay_ms));
        let config = fs_err::read_to_string(&app.ssh_config)?;
        ensure!(config.contains("HostName 127.0.0.1"), "{config}");
        let delayed = ssh_round_trip(&app, 3)?;
        // A login is several round trips; each adds the delay twice.
        let added = delayed.saturating_sub(direct);
        ensure!(
            added >= Duration::from_millis(2 * u64::from(delay_ms)),
            "ssh took {direct:?} direct and {delayed:?} through a {delay_ms} ms proxy"
        );
        // Through the proxy the host key is still checked (HostKeyAlias).
        let (ok, _, err) = ssh(&app, &["-o", "UserKnownHostsFile=/dev/null"], &["true"])?;
        ensure!(!ok && err.contains("Host key verification failed"), "{err}");
        Ok(delayed)
    })();
    th::delay(&sh, &app_name(), 0)?;
    let delayed = result?;
    ensure!(th::current_delay(&app_name()).is_none());
    let config = fs_err::read_to_string(&app.ssh_config)?;
    ensure!(config.contains(&format!("HostName {}", app.ip)), "{config}");
    let marker = format!("/machines/{}/proxy.port", app_name());
    let proxies: Vec<String> = fs_err::read_dir("/proc")?
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" testhost proxy ") && c.contains(&marker))
        .collect();
    ensure!(proxies.is_empty(), "a proxy process is left: {proxies:?}");
    let again = ssh_round_trip(&app, 1)?;
    println!(
        "      ssh login: {direct:?} direct, {delayed:?} with +{delay_ms} ms each way, {again:?} after removing it"
    );
    Ok(())
}

pub fn up_returns_a_healthy_machine(ctx: &mut Ctx) -> Result<()> {
    let app = ctx.machines()?.app.clone();
    let pid = || fs_err::read_to_string(format!("{}/machines/{}/pid", th::STATE_DIR, app_name()));
    let before = pid()?;
    let start = Instant::now();
    let again = th::up(&Shell::new()?, &app_name(), Role::App)?;
    ensure!(again == app, "up returned another machine: {again:?}");
    ensure!(pid()? == before, "up rebooted a healthy machine");
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "up of a running machine took {:?}",
        start.elapsed()
    );
    let err = th::up(&Shell::new()?, &app_name(), Role::Db).expect_err("role change accepted");
    ensure!(
        format!("{err:#}").contains("already up with role app"),
        "{err:#}"
    );
    Ok(())
}

/// A test run that dies leaves a machine whose systemd-nspawn is gone but whose container,
/// veth and cgroups remain: `up` must notice, clean up and boot a working machine again.
pub fn stale_machine_is_cleaned_by_up(ctx: &mut Ctx) -> Result<()> {
    let sh = Shell::new()?;
    ctx.machines()?; // the shared machines must survive this
                     // A third machine, for this scenario only.
    let crash = machine_name("crash");
    let result = (|| -> Result<()> {
        let first = th::up(&sh, &crash, Role::App)?;
        let first_keys = host_keys(&first)?;
        let pid: i32 = fs_err::read_to_string(format!("{}/machines/{crash}/pid", th::STATE_DIR))?
            .trim()
            .parse()?;
        // A test run that dies takes nothing with it: simulate by killing nspawn outright.
        let status = Command::new("sh")
            .args(["-c", "kill -KILL \"$1\"", "sh", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -KILL {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while th::machine(&crash).is_ok() {
            if Instant::now() > deadline {
                bail!("machine {crash} still counts as running after its nspawn was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = th::leftovers_of(&[&crash])?;
        ensure!(!left.is_empty(), "a killed machine left nothing to clean?");
        let second = th::up(&sh, &crash, Role::App)?;
        let (ok, out, err) = ssh(&second, &[], &["systemctl", "is-system-running"])?;
        ensure!(
            ok && out.trim() == "running",
            "after cleanup: '{}' {err}",
            out.trim()
        );
        ensure!(
            host_keys(&second)? != first_keys,
            "the rebooted machine kept its old host keys"
        );
        th::down(&sh, &crash)?;
        let left = th::leftovers_of(&[&crash])?;
        ensure!(left.is_empty(), "left behind by {crash}: {left:#?}");
        Ok(())
    })();
    let _ = th::down(&sh, &crash);
    result?;
    // The shared machines were not disturbed.
    for name in [app_name(), db_name()] {
        th::machine(&name)?.ssh(&["true"])?;
    }
    Ok(())
}

/// `down` removes every trace of this group's machines, their NAT rules and holds on
/// forwarding included, while other machines (other groups, other runs) keep running.
pub fn down_leaves_nothing_behind(ctx: &mut Ctx) -> Result<()> {
    ctx.machines()?;
    let names = [app_name(), db_name()];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // While they run, each has its own NAT rule and hold on forwarding: their absence after
    // down is then a result, not a rule that never existed.
    let rules = th::nat_rules()?;
    let holds = th::forwarding_holds();
    // An xtask of an older checkout replaces the whole table with its one rule: then the
    // tagged rules are gone for a reason outside this run (say so; the checks after down hold).
    let replaced = th::nat_replaced_by_older_xtask()?;
    if replaced {
        println!("      note: an older xtask on this host replaced the NAT table; its per-machine rules are not checked before down");
    }
    for name in &names {
        ensure!(
            replaced || rules.iter().any(|r| r == name),
            "{name} runs without a NAT rule of its own: {rules:?}"
        );
        ensure!(
            holds.iter().any(|h| h == name),
            "{name} runs without a hold on forwarding: {holds:?}"
        );
    }
    let start = Instant::now();
    ctx.take_down()?;
    let took = start.elapsed();
    for name in &names {
        ensure!(
            th::machine(name).is_err(),
            "{name} still running after down"
        );
        ensure!(
            !th::list()?.iter().any(|m| m.name == *name),
            "{name} still listed"
        );
    }
    let left = th::leftovers_of(&names)?;
    ensure!(left.is_empty(), "left behind after down: {left:#?}");
    let rules = th::nat_rules()?;
    let holds = th::forwarding_holds();
    for name in &names {
        ensure!(
            !rules.iter().any(|r| r == name),
            "the NAT rule of {name} is left: {rules:?}"
        );
        ensure!(
            !holds.iter().any(|h| h == name),
            "the hold on forwarding of {name} is left: {holds:?}"
        );
    }
    // The shared parts (the table, ip_forward) go with the last machine on the host.
    if th::list()?.is_empty() {
        let left = th::leftovers()?;
        ensure!(
            left.is_empty(),
            "left behind by the last machine: {left:#?}"
        );
    }
    // down is idempotent.
    th::down(&ctx.sh, &app_name())?;
    println!("      both machines down in {:.1}s", took.as_secs_f64());
    Ok(())
}

/// A unit that appends the boot id it is stopped in to `/var/lib/e2e-stopped` (its ExecStop):
/// a clean shutdown leaves a line, a power cut none.
const STOP_MARK_UNIT: &str = "[Unit]
Description=e2e: records each boot in which its ExecStop ran

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> /var/lib/e2e-stopped'

[Install]
WantedBy=multi-user.target
";

/// Where the unit records its stops, inside the machine.
const STOP_MARKS: &str = "/var/lib/e2e-stopped";
/// The file written before a reboot or power cut, inside the machine.
const BEFORE: &str = "/root/e2e-written-before";

/// Install and start the stop-marking unit, write a file of `token`; returns the boot id.
fn prepare_power_test(m: &Machine, token: &str) -> Result<String> {
    m.ssh(&[
        "sh",
        "-c",
        "printf '%s' \"$1\" > /etc/systemd/system/e2e-stopmark.service && systemctl daemon-reload && systemctl enable --now --quiet e2e-stopmark.service && printf '%s\\n' \"$2\" > \"$3\"",
        "sh",
        STOP_MARK_UNIT,
        token,
        BEFORE,
    ])?;
    let active = m.ssh(&["systemctl", "is-active", "e2e-stopmark.service"])?;
    ensure!(
        active.trim() == "active",
        "the stop-marking unit is {active}"
    );
    boot_id(m)
}

fn boot_id(m: &Machine) -> Result<String> {
    Ok(m.ssh(&["cat", "/proc/sys/kernel/random/boot_id"])?
        .trim()
        .to_string())
}

/// The boot ids in which the stop-marking unit's ExecStop ran, read from the machine's disk
/// on the host (the overlay's upper layer): works while the machine is stopped.
fn stops_on_disk(name: &str) -> Result<Vec<String>> {
    let path = format!("{}/machines/{name}/upper{STOP_MARKS}", th::STATE_DIR);
    match fs_err::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(|l| l.trim().to_string()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Every live process on the host in machine `name`'s cgroups, found by reading each
/// process's `/proc/PID/cgroup` (not through the test host's own bookkeeping). A zombie is
/// dead (it only waits for its parent, the host's init after a power cut, to reap it).
fn processes_in_cgroup_of(name: &str) -> Vec<(u32, String)> {
    let tag = format!("/{}/{name}", th::CGROUP_DIR);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let inside = cg.lines().any(|l| {
                let path = l.splitn(3, ':').nth(2).unwrap_or("");
                path == tag || path.starts_with(&format!("{tag}/"))
            });
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (inside && state != "Z" && state != "X").then(|| (pid, comm.trim().to_string()))
        })
        .collect()
}

/// `testhost reboot`: a clean reboot (the units' ExecStop runs), the same disk, address and
/// host keys booted again, with a new boot id, up the way `up` leaves a machine.
pub fn reboot_keeps_the_disk_and_stops_units(ctx: &mut Ctx) -> Result<()> {
    let app = ctx.machines()?.app.clone();
    let sh = Shell::new()?;
    let token = format!("before the reboot, pid {}", std::process::id());
    let before = prepare_power_test(&app, &token)?;
    let keys = fs_err::read_to_string(&app.known_hosts)?;
    let start = Instant::now();
    let again = th::reboot(&sh, &app.name)?;
    let took = start.elapsed();
    ensure!(again == app, "reboot returned another machine: {again:?}");
    ensure!(th::machine(&app.name)? == app, "the machine changed");
    ensure!(
        fs_err::read_to_string(&app.known_hosts)? == keys,
        "the reboot changed the machine's host keys"
    );
    // Up as `up` leaves it, through the machine's own ssh_config (strict host keys).
    let (ok, out, err) = ssh(&app, &[], &["systemctl", "is-system-running"])?;
    ensure!(
        ok && out.trim() == "running",
        "after the reboot: '{}' {err}",
        out.trim()
    );
    let after = boot_id(&app)?;
    ensure!(after != before, "the boot id is still {before}: no reboot");
    let kept = app.ssh(&["cat", BEFORE])?;
    ensure!(
        kept.trim() == token,
        "{BEFORE} after the reboot holds '{}'",
        kept.trim()
    );
    let stops = app.ssh(&["cat", STOP_MARKS]).unwrap_or_default();
    ensure!(
        stops.lines().any(|l| l.trim() == before),
        "the unit's ExecStop did not run at the reboot ({STOP_MARKS}: {stops:?}, boot before: {before})"
    );
    println!(
        "      rebooted {} in {:.1}s, boot id {before} -> {after}",
        app.name,
        took.as_secs_f64()
    );
    Ok(())
}

/// `testhost poweroff --hard`: every process of the machine gone at once, no shutdown (the
/// unit's ExecStop does not run), the disk kept; `start` boots that disk again, reached with
/// the same host keys. A clean `poweroff` does run the ExecStop; `down` of a stopped machine
/// leaves nothing behind.
pub fn hard_poweroff_runs_no_shutdown_and_start_boots_the_disk(ctx: &mut Ctx) -> Result<()> {
    let sh = Shell::new()?;
    ctx.machines()?; // the shared machines must survive this
    let name = machine_name("power");
    let result = (|| -> Result<()> {
        let m = th::up(&sh, &name, Role::App)?;
        let token = format!("before the power cut, pid {}", std::process::id());
        let before = prepare_power_test(&m, &token)?;
        let keys = fs_err::read_to_string(&m.known_hosts)?;
        let running = processes_in_cgroup_of(&name);
        ensure!(
            running.len() >= 5,
            "the machine's cgroup holds only {running:?}: nothing to kill"
        );
        th::poweroff(&sh, &name, true)?;
        let left = processes_in_cgroup_of(&name);
        ensure!(
            left.is_empty(),
            "processes of {name} left after the power cut: {left:?}"
        );
        let alive: Vec<&(u32, String)> = running
            .iter()
            .filter(|(pid, _)| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                })
            })
            .filter(|(pid, comm)| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect();
        ensure!(
            alive.is_empty(),
            "processes of {name} still run after the power cut: {alive:?}"
        );
        ensure!(
            th::machine(&name).is_err(),
            "{name} still counts as running"
        );
        ensure!(
            th::machines_named(&name) == vec![(name.clone(), th::Use::Stopped)],
            "{name} is {:?}, not stopped",
            th::machines_named(&name)
        );
        let left = th::leftovers_of(&[&name])?;
        ensure!(
            left.is_empty(),
            "the stopped machine left more than its disk: {left:#?}"
        );
        let stops = stops_on_disk(&name)?;
        ensure!(
            !stops.contains(&before),
            "the unit's ExecStop ran at a power cut: {stops:?}"
        );

        let again = th::start(&sh, &name)?;
        ensure!(again == m, "start returned another machine: {again:?}");
        ensure!(
            fs_err::read_to_string(&m.known_hosts)? == keys,
            "start changed the machine's host keys"
        );
        let (ok, out, err) = ssh(&m, &[], &["cat", BEFORE])?;
        ensure!(
            ok && out.trim() == token,
            "after start, {BEFORE} over ssh: '{}' {err}",
            out.trim()
        );
        let (ok, out, err) = ssh(&m, &[], &["systemctl", "is-system-running"])?;
        ensure!(
            ok && out.trim() == "running",
            "after start: '{}' {err}",
            out.trim()
        );
        let second = boot_id(&m)?;
        ensure!(second != before, "the boot id is still {before}");
        let stops = m.ssh(&["cat", STOP_MARKS]).unwrap_or_default();
        ensure!(
            !stops.lines().any(|l| l.trim() == before),
            "the unit's ExecStop ran at a power cut: {stops:?}"
        );

        // A clean poweroff runs it: the mark can be made, so its absence above means something.
        th::poweroff(&sh, &name, false)?;
        ensure!(
            th::machines_named(&name) == vec![(name.clone(), th::Use::Stopped)],
            "{name} is {:?} after poweroff",
            th::machines_named(&name)
        );
        let stops = stops_on_disk(&name)?;
        ensure!(
            stops.contains(&second) && !stops.contains(&before),
            "after a clean poweroff the unit's stops are {stops:?} (boots: {before} cut, {second} shut down)"
        );
        th::down(&sh, &name)?;
        let left = th::leftovers_of(&[&name])?;
        ensure!(left.is_empty(), "left behind by {name}: {left:#?}");
        Ok(())
    })();
    let _ = th::down(&sh, &name);
    result?;
    for n in [app_name(), db_name()] {
        th::machine(&n)?.ssh(&["true"])?;
    }
    Ok(())
}
