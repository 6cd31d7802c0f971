//! `setup-server` scenarios: a fresh Debian 12 machine refused bad input without a change, is
//! provisioned (every step `changed`, the state checked directly over ssh), a second run changes
//! nothing, drift is repaired, env files are kept unless forced, a bad sudoers never lands,
//! a sudo-capable admin works and one without sudo is refused, an unreachable host and a wrong
//! key fail cleanly.
//!
//! They run on the shared app machine, before the deploy scenarios, and leave it provisioned
//! exactly as `demo::Environment` describes it (so `ctx.site()` finds it ready). Scenarios that
//! need a fresh host use a private machine (taken down at the end of the scenario) when the
//! shared one is already provisioned.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::Shell;
use xtask::demo::Environment;
use xtask::flags::Role;
use xtask::testhost::{self as th, Machine};

use crate::Ctx;

/// Step names in the order setup-server prints them (after `target`).
const STEPS: [&str; 12] = [
    "packages",
    "uv",
    "node",
    "user & dirs",
    "deploy key",
    "backend env",
    "frontend env",
    "journal access",
    "sudoers",
    "systemd units",
    "role",
    "nginx site",
];

/// A machine to provision and the environment a user would set for it.
struct Host {
    m: Machine,
    env: Environment,
    /// The db password in the backend env file: must never appear in any output.
    secret: String,
    _private: Option<PrivateMachine>,
}

/// Takes a private machine down when dropped.
struct PrivateMachine(String);

impl Drop for PrivateMachine {
    fn drop(&mut self) {
        if let Ok(sh) = Shell::new() {
            let _ = th::down(&sh, &self.0);
        }
    }
}

impl Host {
    fn shared(ctx: &mut Ctx) -> Result<Host> {
        let ms = ctx.machines()?;
        let env = Environment::for_machines(&ms.app, &ms.db)?;
        Ok(Host {
            m: ms.app.clone(),
            env,
            secret: th::db_info(&ms.db).password,
            _private: None,
        })
    }

    /// A host nothing has provisioned yet: the shared app machine if it still is fresh,
    /// otherwise a private machine.
    fn fresh(ctx: &mut Ctx) -> Result<Host> {
        let shared = Host::shared(ctx)?;
        if shared.is_fresh()? {
            return Ok(shared);
        }
        let db = ctx.machines()?.db.clone();
        // A private machine for the fresh-host scenarios when the shared one is already
        // provisioned.
        let name = crate::machine_name("fresh");
        let guard = PrivateMachine(name.clone());
        th::down(&ctx.sh, &name)?;
        let m = th::up(&ctx.sh, &name, Role::App)?;
        let env = Environment::for_machines(&m, &db)?;
        Ok(Host {
            m,
            env,
            secret: shared.secret,
            _private: Some(guard),
        })
    }

    /// The shared app machine, provisioned (by an earlier scenario, or now).
    fn provisioned_shared(ctx: &mut Ctx) -> Result<Host> {
        let h = Host::shared(ctx)?;
        if !h.provisioned()? {
            h.setup(&[], &[])?.ok()?;
        }
        Ok(h)
    }

    /// Nothing of setup-server's on it: no app user, no nginx, no deploy root.
    fn is_fresh(&self) -> Result<bool> {
        let f = self.untouched_facts()?;
        Ok(f["user"] == "no" && f["nginx"] == "no" && f["opt"] == "no")
    }

    fn untouched_facts(&self) -> Result<BTreeMap<String, String>> {
        self.facts(
            "id innercontext >/dev/null 2>&1 && echo user=yes || echo user=no
             dpkg-query -W nginx >/dev/null 2>&1 && echo nginx=yes || echo nginx=no
             test -e /opt/innercontext && echo opt=yes || echo opt=no",
        )
    }

    fn provisioned(&self) -> Result<bool> {
        Ok(self
            .root("id -u innercontext >/dev/null 2>&1 && test -f /etc/sudoers.d/innercontext-deploy && echo yes || echo no")?
            .trim()
            == "yes")
    }

    /// `cargo xtask setup-server` with the key and env file flags, `args` and `env` added.
    fn setup(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
        let mut full = self.env.setup_server_args();
        full.extend(args);
        self.xtask(&full, env)
    }

    fn xtask(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
        let mut cmd = self.env.command(env!("CARGO_BIN_EXE_xtask"), &repo(), args);
        cmd.env_remove(xtask::setup_server::SUDOERS_SOURCE_ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().context("running xtask setup-server")?;
        let run = Run {
            ok: out.status.success(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        ensure!(
            !run.out.contains(&self.secret),
            "the output shows the backend env file's contents:\n{}",
            run.out
        );
        Ok(run)
    }

    /// A shell script as root on the machine; its stdout.
    fn root(&self, script: &str) -> Result<String> {
        self.m.ssh(&["bash", "-c", script])
    }

    /// `key=value` lines of a root script.
    fn facts(&self, script: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .root(script)?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// What a re-run must not touch: env file contents and modes, the installed files'
    /// inodes and mtimes (a rewrite changes them), nginx's main and worker processes (a reload
    /// replaces the workers).
    fn fingerprint(&self) -> Result<BTreeMap<String, String>> {
        self.facts(
            r#"set -e
            cd /opt/innercontext/shared
            for f in backend/.env frontend/.env.production; do
                echo "$f=$(sha256sum <"$f" | cut -d' ' -f1) $(stat -c '%a %U:%G %i %Y' "$f")"
            done
            for f in /etc/sudoers.d/innercontext-deploy /etc/nginx/sites-available/innercontext \
                UNIT_DIR/innercontext*.service UNIT_DIR/innercontext*.socket \
                /home/innercontext/.ssh/authorized_keys /usr/local/bin/node /usr/local/bin/uv \
                /usr/local/sbin/innercontext-journal; do
                echo "$f=$(stat -c '%a %U:%G %i %Y' "$f")"
            done
            pid=$(systemctl show -p MainPID --value nginx)
            echo "nginx=$pid $(systemctl show -p ActiveEnterTimestampMonotonic --value nginx)"
            echo "nginx_workers=$(pgrep -P "$pid" | sort | tr '\n' ' ')"
            echo "packages=$(dpkg-query -W -f '${Package} ${Version}\n' | sha256sum | cut -c1-16)"
            echo "users=$(getent passwd | sha256sum | cut -c1-16) $(getent group | sha256sum | cut -c1-16)"
            "#
            .replace("UNIT_DIR", xtask::contract::UNIT_DIR)
            .as_str(),
        )
    }

    /// Everything an admin could have changed on a fresh host, for before/after comparisons.
    fn untouched_marker(&self) -> Result<()> {
        self.root("touch /run/e2e-setup-marker")?;
        Ok(())
    }

    fn assert_untouched(&self) -> Result<()> {
        let out = self.root(
            "find /etc /opt /usr /home /root -xdev -newer /run/e2e-setup-marker \
             ! -path '/root/.ssh*' -print 2>/dev/null | head -n 20",
        )?;
        ensure!(out.trim().is_empty(), "the host changed:\n{out}");
        let f = self.untouched_facts()?;
        ensure!(
            f["user"] == "no" && f["nginx"] == "no" && f["opt"] == "no",
            "fresh host changed: {f:?}"
        );
        Ok(())
    }
}

struct Run {
    ok: bool,
    out: String,
}

impl Run {
    fn ok(self) -> Result<Run> {
        ensure!(self.ok, "setup-server failed:\n{}", self.out);
        Ok(self)
    }

    fn failed(self) -> Result<Run> {
        ensure!(!self.ok, "setup-server should have failed:\n{}", self.out);
        Ok(self)
    }

    /// The status label of each step line, by step name.
    fn statuses(&self) -> BTreeMap<&'static str, String> {
        let mut map = BTreeMap::new();
        for line in self.out.lines() {
            let Some(rest) = line.strip_prefix("  [") else {
                continue;
            };
            let Some((label, rest)) = rest.split_once(']') else {
                continue;
            };
            let rest = rest.trim_start();
            if let Some(step) = STEPS.iter().chain(["target"].iter()).find(|s| {
                rest.strip_prefix(**s)
                    .is_some_and(|after| after.starts_with("  ") || after.starts_with(' '))
            }) {
                map.insert(*step, label.to_string());
            }
        }
        map
    }

    fn step_line(&self, step: &str) -> &str {
        self.out
            .lines()
            .find(|l| {
                l.starts_with("  [") && {
                    let rest = l.split_once(']').map(|(_, r)| r.trim_start()).unwrap_or("");
                    rest.starts_with(&format!("{step} "))
                }
            })
            .unwrap_or("")
    }

    /// Every step reports `label`, except those in `except` (which report `changed`).
    fn expect(&self, label: &str, except: &[&str]) -> Result<()> {
        let st = self.statuses();
        for step in STEPS {
            let want = if except.contains(&step) {
                "changed"
            } else {
                label
            };
            ensure!(
                st.get(step).map(String::as_str) == Some(want),
                "step '{step}' should be {want}, got {:?}:\n{}",
                st.get(step),
                self.out
            );
        }
        Ok(())
    }

    fn contains(&self, needle: &str) -> Result<()> {
        ensure!(
            self.out.contains(needle),
            "expected '{needle}' in:\n{}",
            self.out
        );
        Ok(())
    }
}

/// The repository this test binary was built from.
fn repo() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

fn scratch_dir() -> Result<Utf8PathBuf> {
    let dir = Utf8PathBuf::from(format!(
        "/tmp/innercontext-e2e-setup-{}",
        std::process::id()
    ));
    fs_err::create_dir_all(&dir)?;
    Ok(dir)
}

fn write(dir: &Utf8Path, name: &str, text: &str) -> Result<Utf8PathBuf> {
    let p = dir.join(name);
    fs_err::write(&p, text)?;
    Ok(p)
}

fn sha256(path: &Utf8Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// A sudoers text visudo rejects (a trailing comma ends the command list).
const BAD_SUDOERS: &str =
    "innercontext ALL=(root) NOPASSWD: /usr/bin/systemctl restart innercontext,\n";

/// On a fresh host: missing env file and key flags, a sudoers source visudo rejects, and
/// `--dry-run` (both toolchain sources) all leave the host exactly as it was.
pub fn fresh_host_bad_input_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let h = Host::fresh(ctx)?;
    h.untouched_marker()?;

    let run = h.xtask(&["setup-server"], &[])?.failed()?;
    run.contains("nothing was changed")?;
    run.contains(
        "/opt/innercontext/shared/backend/.env does not exist on the host: pass --backend-env FILE",
    )?;
    run.contains("--frontend-env FILE")?;
    run.contains("pass --deploy-key FILE")?;
    ensure!(!run.out.contains("[changed]"), "{}", run.out);

    let dir = scratch_dir()?;
    let bad = write(&dir, "bad.sudoers", BAD_SUDOERS)?;
    let run = h
        .setup(
            &[],
            &[(xtask::setup_server::SUDOERS_SOURCE_ENV, bad.as_str())],
        )?
        .failed()?;
    run.contains("visudo rejects the sudoers source")?;
    run.contains("syntax error")?;
    run.contains("nothing was changed")?;

    let run = h.setup(&["--dry-run"], &[])?.ok()?;
    run.expect("would change", &[])?;
    run.contains("dry run: nothing was changed")?;
    run.contains("uv none -> 0.13.8 from PyPI")?;
    let run = h
        .setup(&["--dry-run", "--toolchain", "upstream"], &[])?
        .ok()?;
    run.contains("with the astral.sh installer")?;
    run.contains("with nvm v0.40.4")?;

    h.assert_untouched()?;
    let _ = fs_err::remove_dir_all(&dir);
    Ok(())
}

/// A fresh host: every step `changed`, the verification passes, and the state checked
/// directly: user, layout, env files, key, sudo, units, nginx, node, uv.
pub fn fresh_host_is_provisioned(ctx: &mut Ctx) -> Result<()> {
    let h = Host::fresh(ctx)?;
    let run = h.setup(&[], &[])?.ok()?;
    run.expect("changed", &[])?;
    ensure!(run.statuses().get("target").map(String::as_str) == Some("ok"));
    run.contains("is ready for 'cargo xtask deploy all'")?;
    ensure!(!run.out.contains("FAIL"), "{}", run.out);
    check_provisioned(&h)?;
    Ok(())
}

/// The state a deploy needs, checked over ssh without setup-server's own verification.
fn check_provisioned(h: &Host) -> Result<()> {
    let f = h.facts(
        r#"
        echo "groups=$(id -nG innercontext)"
        echo "shell=$(getent passwd innercontext | cut -d: -f7)"
        for d in /opt/innercontext /opt/innercontext/releases /opt/innercontext/shared \
            /opt/innercontext/shared/backend /opt/innercontext/shared/frontend \
            /opt/innercontext/shared/uv-cache /opt/innercontext/scripts; do
            echo "dir:$d=$(stat -c '%U:%G %a' "$d")"
        done
        echo "backend=$(stat -c '%a %U:%G' /opt/innercontext/shared/backend/.env) $(sha256sum </opt/innercontext/shared/backend/.env | cut -d' ' -f1)"
        echo "frontend=$(stat -c '%a %U:%G' /opt/innercontext/shared/frontend/.env.production) $(sha256sum </opt/innercontext/shared/frontend/.env.production | cut -d' ' -f1)"
        for u in innercontext innercontext-node innercontext-pricing-worker; do
            echo "enabled:$u=$(systemctl is-enabled $u.service)"
            echo "active:$u=$(systemctl is-active $u.service)"
        done
        nginx -t >/dev/null 2>&1 && echo nginx_t=ok || echo nginx_t=fail
        echo "nginx_active=$(systemctl is-active nginx)"
        test -e /etc/nginx/sites-enabled/default && echo default=present || echo default=gone
        echo "site=$(readlink /etc/nginx/sites-enabled/innercontext)"
        echo "node=$(node --version)"
        echo "uv=$(uv --version)"
        echo "sudoers=$(stat -c '%a %U:%G' /etc/sudoers.d/innercontext-deploy)"
        echo "journal=$(stat -c '%a %U:%G' /usr/local/sbin/innercontext-journal)"
        echo "home=$(cd /home/innercontext && stat -c '%n:%a:%U:%G' . .ssh .ssh/authorized_keys .bashrc .profile .bash_logout | tr '\n' ' ')"
        echo "recorded=$(stat -c '%a %U:%G' /etc/innercontext/deploy-keys) $(grep -c . /etc/innercontext/deploy-keys)"
        "#,
    )?;
    // Unit logs come through the log reader, not the whole system journal.
    ensure!(
        !f["groups"]
            .split_whitespace()
            .any(|g| g == "systemd-journal"),
        "groups: {}",
        f["groups"]
    );
    ensure!(
        f["journal"] == "755 root:root",
        "log reader: {}",
        f["journal"]
    );
    ensure!(f["shell"] == "/bin/bash");
    // The deploy user's login is root's: home, .ssh, its keys and start-up files.
    for entry in f["home"].split_whitespace() {
        let (name, mode) = entry.split_once(':').unwrap_or((entry, ""));
        let want = if [".", ".ssh"].contains(&name) {
            "755:root:root"
        } else {
            "644:root:root"
        };
        ensure!(mode == want, "~innercontext/{name}: {mode} (want {want})");
    }
    ensure!(
        f["recorded"] == "644 root:root 1",
        "recorded keys: {}",
        f["recorded"]
    );
    for (k, v) in f.iter().filter(|(k, _)| k.starts_with("dir:")) {
        ensure!(v.starts_with("innercontext:innercontext "), "{k} = {v}");
    }
    for (kind, local) in [
        ("backend", &h.env.backend_env),
        ("frontend", &h.env.frontend_env),
    ] {
        let want = format!("600 innercontext:innercontext {}", sha256(local)?);
        ensure!(f[kind] == want, "{kind} env: {} (want {want})", f[kind]);
    }
    for u in [
        "innercontext",
        "innercontext-node",
        "innercontext-pricing-worker",
    ] {
        ensure!(f[&format!("enabled:{u}")] == "enabled", "{u} not enabled");
        // Not started before the first deploy: there is no current release to run.
        ensure!(f[&format!("active:{u}")] != "active", "{u} was started");
    }
    ensure!(f["nginx_t"] == "ok" && f["nginx_active"] == "active");
    ensure!(f["default"] == "gone");
    ensure!(f["site"] == "/etc/nginx/sites-available/innercontext");
    ensure!(f["node"].starts_with("v24."), "node {}", f["node"]);
    ensure!(f["uv"].starts_with("uv 0.13.8"), "{}", f["uv"]);
    ensure!(f["sudoers"] == "440 root:root", "sudoers {}", f["sudoers"]);

    // sudo -n -l as innercontext, without a TTY, lists exactly the three restarts, the three
    // reset-failed, stop and start lines (each unit with its socket: `db restore` stops and
    // starts them) and the log reader.
    let listing = h.root("sudo -u innercontext sudo -n -ll </dev/null")?;
    let mut got = sudo_commands(&listing);
    got.sort();
    let units = xtask::contract::UNITS;
    let mut want: Vec<String> = units
        .iter()
        .map(|u| format!("/usr/bin/systemctl restart {}", u.name))
        .chain(
            units
                .iter()
                .map(|u| format!("/usr/bin/systemctl reset-failed {}", u.reset_targets())),
        )
        .chain(["stop", "start"].iter().flat_map(|verb| {
            units
                .iter()
                .map(move |u| format!("/usr/bin/systemctl {verb} {}", u.reset_targets()))
        }))
        .chain(["/usr/local/sbin/innercontext-journal".to_string()])
        .collect();
    want.sort();
    ensure!(got == want, "sudo -n -ll lists {got:?}\n{listing}");

    // The deploy key logs in as innercontext, whose sudo works without a password.
    let out = duct::cmd(
        "ssh",
        h.m.ssh_args(
            Some("innercontext"),
            &[
                "sudo".into(),
                "-n".into(),
                "/usr/local/sbin/innercontext-journal".into(),
                "-n".into(),
                "1".into(),
                "innercontext".into(),
            ],
        ),
    )
    .stdin_null()
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stderr.contains("password")
            && !stderr.contains("terminal")
            && out.status.code() != Some(255),
        "innercontext@{}: {stderr}",
        h.m.name
    );
    Ok(())
}

/// Commands under `Commands:` in `sudo -ll` output.
fn sudo_commands(listing: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in listing.lines() {
        if line.trim() == "Commands:" {
            in_commands = true;
        } else if in_commands && line.starts_with(char::is_whitespace) && !line.trim().is_empty() {
            out.push(line.trim().to_string());
        } else {
            in_commands = false;
        }
    }
    out
}

/// A second run: every step `unchanged`, env files byte-identical, no file rewritten, nginx
/// neither restarted nor reloaded.
pub fn second_run_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let before = h.fingerprint()?;
    let run = h.setup(&[], &[])?.ok()?;
    run.expect("unchanged", &[])?;
    let after = h.fingerprint()?;
    ensure!(
        before == after,
        "second run changed the host:\nbefore {before:#?}\nafter {after:#?}"
    );
    // Also as root@ with no flags at all: the server's files are enough.
    let run = h.xtask(&["setup-server"], &[])?.ok()?;
    run.expect("unchanged", &[])?;
    ensure!(h.fingerprint()? == before);
    Ok(())
}

/// A secondary (DEPLOY_SERVER marks the host `#secondary`): once it is one, a second run
/// changes nothing, every step `unchanged` (the units step leaves the primary's only units to
/// the role: the worker is never enabled on the way), no file rewritten, the worker disabled
/// and stopped. Then the host is made the primary again, as the other scenarios want it.
pub fn a_secondary_second_run_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let secondary = format!("{}#secondary", h.env.server);
    let primary = format!("{}#primary", h.env.server);
    let result = (|| -> Result<()> {
        h.setup(&[], &[("DEPLOY_SERVER", &secondary)])?.ok()?;
        let before = h.fingerprint()?;
        let run = h.setup(&[], &[("DEPLOY_SERVER", &secondary)])?.ok()?;
        run.expect("unchanged", &[])?;
        let after = h.fingerprint()?;
        ensure!(
            before == after,
            "a second run on a secondary changed the host:\nbefore {before:#?}\nafter {after:#?}"
        );
        let worker = h.root(
            "systemctl is-enabled innercontext-pricing-worker || true; systemctl is-active innercontext-pricing-worker || true",
        )?;
        ensure!(
            worker.split_whitespace().collect::<Vec<_>>() == ["disabled", "inactive"],
            "the worker on a secondary is {worker:?}:\n{}",
            run.out
        );
        Ok(())
    })();
    let back = h
        .setup(&[], &[("DEPLOY_SERVER", &primary)])
        .and_then(Run::ok)
        .context("making the shared machine the primary again");
    result?;
    back?;
    Ok(())
}

/// DEPLOY_SERVER with every host marked `#secondary` (nothing would migrate or run the
/// worker): refused in one line before any host is touched.
pub fn a_fleet_of_secondaries_is_refused(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let role = || h.root("cat /etc/innercontext/role");
    let before = (h.fingerprint()?, role()?);
    // The unreachable host first: a setup-server that went ahead would stop there.
    let server = format!(
        "innercontext@{}-none#secondary,{}#secondary",
        h.m.name, h.env.server
    );
    let run = h
        .setup(&[], &[("DEPLOY_SERVER", &server), ("DEPLOY_ADMIN", "root")])?
        .failed()?;
    run.contains("marks every host #secondary: a fleet needs exactly one primary")?;
    ensure!(!run.out.contains("  ["), "a step ran:\n{}", run.out);
    ensure!((h.fingerprint()?, role()?) == before, "the host changed");
    Ok(())
}

/// Drift (sudoers deleted, a unit edited, an env file 0644, app paths given to root by hand)
/// is repaired and reported; the rest stays unchanged.
pub fn drift_is_repaired(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let env_sha = sha256(&h.env.backend_env)?;
    h.root(&format!(
        "rm /etc/sudoers.d/innercontext-deploy
         echo '# drift' >> {}/innercontext.service
         chmod 0644 /opt/innercontext/shared/backend/.env
         chown root:root /opt/innercontext/shared/frontend
         chmod 0666 /home/innercontext/.ssh/authorized_keys
         chown innercontext:innercontext /home/innercontext/.bashrc
         chmod 0700 /opt/innercontext/shared/frontend",
        xtask::contract::UNIT_DIR
    ))?;
    let run = h.setup(&[], &[])?.ok()?;
    run.expect(
        "unchanged",
        &[
            "sudoers",
            "systemd units",
            "backend env",
            "user & dirs",
            "deploy key",
        ],
    )?;
    ensure!(
        run.step_line("user & dirs").contains(
            "/opt/innercontext/shared/frontend 700 root:root -> 750 innercontext:innercontext"
        ),
        "{}",
        run.out
    );
    ensure!(
        run.step_line("deploy key")
            .contains("/home/innercontext/.bashrc (file 644 innercontext:innercontext) -> root's start-up file"),
        "{}",
        run.out
    );
    let owners = h.root(
        "stat -c '%a %U:%G' /opt/innercontext/shared/frontend /home/innercontext/.ssh/authorized_keys /home/innercontext/.bashrc",
    )?;
    ensure!(
        owners == "750 innercontext:innercontext\n644 root:root\n644 root:root\n",
        "{owners}"
    );
    ensure!(
        run.step_line("sudoers")
            .contains("new /etc/sudoers.d/innercontext-deploy"),
        "{}",
        run.out
    );
    ensure!(
        run.step_line("systemd units")
            .contains("updated innercontext.service"),
        "{}",
        run.out
    );
    ensure!(run.step_line("backend env").contains("644"), "{}", run.out);

    let unit = fs_err::read_to_string(repo().join("systemd/innercontext.service"))?;
    let remote_unit = h.root(&format!(
        "cat {}/innercontext.service",
        xtask::contract::UNIT_DIR
    ))?;
    ensure!(remote_unit == unit, "the unit was not restored");
    let f = h.facts(
        "echo \"env=$(stat -c '%a %U:%G' /opt/innercontext/shared/backend/.env) $(sha256sum </opt/innercontext/shared/backend/.env | cut -d' ' -f1)\"
         echo \"sudoers=$(stat -c '%a %U:%G' /etc/sudoers.d/innercontext-deploy)\"
         sudo -u innercontext sudo -n -l >/dev/null 2>&1 </dev/null && echo sudo=ok || echo sudo=fail
         systemctl show -p NeedDaemonReload --value innercontext.service | sed 's/^/reload=/'",
    )?;
    ensure!(
        f["env"] == format!("600 innercontext:innercontext {env_sha}"),
        "{f:?}"
    );
    ensure!(
        f["sudoers"] == "440 root:root" && f["sudo"] == "ok",
        "{f:?}"
    );
    ensure!(
        f["reload"] == "no",
        "systemd still has the edited unit: {f:?}"
    );
    Ok(())
}

/// An env file that differs from the local one is kept (and said so) unless --force-env; its
/// contents never appear in the output.
pub fn env_files_are_kept_unless_forced(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let dir = scratch_dir()?;
    let other = write(
        &dir,
        "backend.env",
        "DATABASE_URL=postgresql+psycopg://other:other-secret-77@10.0.0.9/x\n",
    )?;
    let remote_sha = || -> Result<String> {
        Ok(
            h.root("sha256sum </opt/innercontext/shared/backend/.env | cut -d' ' -f1")?
                .trim()
                .to_string(),
        )
    };
    let original = sha256(&h.env.backend_env)?;
    let run = h
        .xtask(&["setup-server", "--backend-env", other.as_str()], &[])?
        .ok()?;
    run.expect("unchanged", &[])?;
    run.contains(&format!(
        "differs from {other}; keeping the server's, use --force-env"
    ))?;
    ensure!(remote_sha()? == original);

    let run = h
        .xtask(
            &[
                "setup-server",
                "--backend-env",
                other.as_str(),
                "--force-env",
            ],
            &[],
        )?
        .ok()?;
    run.expect("unchanged", &["backend env"])?;
    ensure!(!run.out.contains("other-secret-77"), "{}", run.out);
    ensure!(remote_sha()? == sha256(&other)?);
    let mode = h.root("stat -c '%a %U:%G' /opt/innercontext/shared/backend/.env")?;
    ensure!(mode.trim() == "600 innercontext:innercontext", "{mode}");

    // Put the shared machine's own file back.
    h.setup(&["--force-env"], &[])?.ok()?;
    ensure!(remote_sha()? == original);
    let _ = fs_err::remove_dir_all(&dir);
    Ok(())
}

/// On a provisioned host a sudoers source visudo rejects fails before any change, and the
/// script's own step refuses it too (visudo on a temporary file first): the installed drop-in
/// stays byte-identical, no temporary file is left, sudo keeps working.
pub fn bad_sudoers_never_lands(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    let snapshot = || h.root("ls -la --time-style=+%s /etc/sudoers.d; sha256sum /etc/sudoers.d/*");
    let before = snapshot()?;
    let dir = scratch_dir()?;
    let bad = write(&dir, "bad.sudoers", BAD_SUDOERS)?;
    let run = h
        .setup(
            &[],
            &[(xtask::setup_server::SUDOERS_SOURCE_ENV, bad.as_str())],
        )?
        .failed()?;
    run.contains("visudo rejects the sudoers source")?;
    ensure!(!run.out.contains("[changed]"), "{}", run.out);

    // The step itself, bypassing the preflight: same script, same arguments setup-server sends.
    let call = xtask::setup_server::sudoers_call(BAD_SUDOERS);
    let out = duct::cmd(
        "ssh",
        h.m.ssh_args(None, &[]).into_iter().chain([call.line()]),
    )
    .stdin_null()
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !out.status.success(),
        "the sudoers step accepted a bad source: {stdout}"
    );
    ensure!(
        stdout.contains("error=visudo rejected the sudoers source, /etc/sudoers.d/innercontext-deploy left as it was"),
        "{stdout}"
    );

    ensure!(snapshot()? == before, "/etc/sudoers.d changed");
    let check = h.root(
        "visudo -c >/dev/null && sudo -u innercontext sudo -n -l >/dev/null </dev/null && echo ok",
    )?;
    ensure!(check.trim() == "ok");
    let _ = fs_err::remove_dir_all(&dir);
    Ok(())
}

/// An admin with passwordless sudo provisions like root (env contents through sudo's stdin
/// included); one without sudo is refused before any change.
pub fn admin_through_sudo(ctx: &mut Ctx) -> Result<()> {
    let h = Host::provisioned_shared(ctx)?;
    h.root(
        "set -e
         for u in e2eops e2eplain; do
             id $u >/dev/null 2>&1 || useradd -m -s /bin/bash $u
             install -d -m 700 -o $u -g $u /home/$u/.ssh
             install -m 600 -o $u -g $u /root/.ssh/authorized_keys /home/$u/.ssh/authorized_keys
         done
         echo 'e2eops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/e2eops
         chmod 0440 /etc/sudoers.d/e2eops",
    )?;
    let result = (|| -> Result<()> {
        let before = h.fingerprint()?;
        let plain = format!("e2eplain@{}", h.m.name);
        let run = h.setup(&["--admin", &plain], &[])?.failed()?;
        run.contains("admin login e2eplain cannot become root without a password")?;
        run.contains("nothing was changed")?;
        ensure!(h.fingerprint()? == before);

        let ops = format!("e2eops@{}", h.m.name);
        let run = h.setup(&["--admin", &ops], &[])?.ok()?;
        run.contains("root via sudo as e2eops")?;
        run.expect("unchanged", &[])?;
        ensure!(h.fingerprint()? == before);

        let dir = scratch_dir()?;
        let other = write(&dir, "frontend.env", "ORIGIN=http://example.invalid\n")?;
        let run = h
            .xtask(
                &[
                    "setup-server",
                    "--admin",
                    &ops,
                    "--frontend-env",
                    other.as_str(),
                    "--force-env",
                ],
                &[],
            )?
            .ok()?;
        run.expect("unchanged", &["frontend env"])?;
        let remote =
            h.root("sha256sum </opt/innercontext/shared/frontend/.env.production | cut -d' ' -f1")?;
        ensure!(remote.trim() == sha256(&other)?);
        h.setup(&["--force-env"], &[])?.ok()?;
        let _ = fs_err::remove_dir_all(&dir);
        Ok(())
    })();
    h.root(
        "rm -f /etc/sudoers.d/e2eops
         for u in e2eops e2eplain; do userdel -r $u 2>/dev/null || true; done",
    )?;
    result
}

/// An unreachable host and a key the server refuses: one clear line, no step runs.
pub fn unreachable_host_and_wrong_key_fail_cleanly(ctx: &mut Ctx) -> Result<()> {
    let h = Host::shared(ctx)?;
    let dir = scratch_dir()?;

    // A key the server does not know, everything else as for the real machine.
    let key = dir.join("wrong_key");
    let _ = fs_err::remove_file(&key);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.as_str()])
        .status()?;
    ensure!(status.success(), "ssh-keygen failed");
    let config = fs_err::read_to_string(&h.m.ssh_config)?;
    ensure!(
        config.contains("IdentityFile "),
        "no IdentityFile in {}",
        h.m.ssh_config
    );
    let wrong: String = config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("IdentityFile ") {
                format!("    IdentityFile {key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let wrong_config = write(&dir, "ssh_config_wrong_key", &wrong)?;
    let run = h
        .setup(&[], &[("DEPLOY_SSH_CONFIG", wrong_config.as_str())])?
        .failed()?;
    run.contains(&format!(
        "cannot log in to root@{}: the server refused the key",
        h.m.name
    ))?;
    run.contains("nothing was changed")?;
    ensure!(!run.out.contains("  ["), "steps ran:\n{}", run.out);
    ensure!(run.out.lines().filter(|l| l.starts_with("error:")).count() == 1);

    // A closed port on loopback: nothing leaves this machine.
    let nowhere = write(
        &dir,
        "ssh_config_nowhere",
        "Host nowhere\n    HostName 127.0.0.1\n    Port 9\n    BatchMode yes\n",
    )?;
    let run = h
        .setup(
            &[],
            &[
                ("DEPLOY_SSH_CONFIG", nowhere.as_str()),
                ("DEPLOY_SERVER", "innercontext@nowhere"),
                ("DEPLOY_ADMIN", ""),
            ],
        )?
        .failed()?;
    run.contains("cannot connect to root@nowhere")?;
    run.contains("nothing was changed")?;
    ensure!(!run.out.contains("  ["), "steps ran:\n{}", run.out);
    let _ = fs_err::remove_dir_all(&dir);
    Ok(())
}
