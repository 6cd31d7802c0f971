//! The README's "run it" command: `cargo xtask demo` boots, provisions and deploys, the URL it
//! prints serves the app through nginx, and `demo --down` leaves no machine behind. The demo
//! runs under this run's own machine names (`INNERCONTEXT_DEMO_PREFIX`), so a user's running
//! demo (`app`, `db`) is never touched, and from a copy of the repository in a private (0700)
//! directory, as a clone in root's home is: its checks (PostgreSQL as another user) must work
//! from there, and they really run (a new copy has no cached result).

use std::process::Command;

use anyhow::{ensure, Context, Result};
use xtask::testhost as th;

use crate::support::{http_get, scratch, xtask_bin};
use crate::Ctx;

/// The demo's machines named exactly `app` or `db` (a user's demo), and how they are used.
fn users_demo() -> Vec<(String, th::Use)> {
    th::machines_named("")
        .into_iter()
        .filter(|(n, _)| n == xtask::demo::APP || n == xtask::demo::DB)
        .collect()
}

pub fn up_serves_and_down_cleans(_ctx: &mut Ctx) -> Result<()> {
    let prefix = format!("{}demo", crate::run_id());
    let (app, db) = (format!("{prefix}app"), format!("{prefix}db"));
    let before = users_demo();
    // The README promises a short list of steps when the image is already there.
    let cached = th::image_ready();
    let checkout = scratch("demo")?;
    // The copy is private the way a home directory is: the postgres user cannot enter it.
    let enter = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(checkout.dir.as_str())
        .status()
        .context("runuser")?;
    ensure!(
        !enter.success(),
        "the postgres user can enter {}: not a private checkout",
        checkout.dir
    );
    let demo = |args: &[&str]| {
        Command::new(xtask_bin())
            .args(args)
            .current_dir(&checkout.dir)
            .env("XTASK_PROJECT_ROOT", &checkout.dir)
            .env("CI", "true")
            .env(xtask::demo::PREFIX_ENV, &prefix)
            .output()
    };
    let out = demo(&["demo"]).context("running cargo xtask demo")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let url = text
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with('/'))
        .map(|u| {
            u.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        });
    // The page and the API answer through nginx at the printed URL.
    let served = url.as_deref().map(|host| {
        (
            http_get(host, 80, "/"),
            http_get(host, 80, "/api/health-check"),
        )
    });
    // It booted this run's machines, at the address it printed.
    let booted = th::machine(&app)
        .map(|m| m.ip)
        .map_err(|e| format!("{e:#}"));
    let down = demo(&["demo", "--down"])?;
    ensure!(out.status.success(), "demo failed:\n{text}");
    // The checks ran (a new copy has passed nothing before), the backend's against PostgreSQL.
    let ran = |label: &str| {
        text.lines().any(|l| {
            l.contains(label) && l.contains(" ok (") && !l.contains("passed for this tree")
        })
    };
    for label in [
        "local checks: backend (ruff, pytest)",
        "local checks: frontend (svelte-check, tests)",
    ] {
        ensure!(
            ran(label),
            "the demo's deploy did not run '{label}':\n{text}"
        );
    }
    let lines = text.lines().count();
    ensure!(
        !cached || lines < 40,
        "the demo printed {lines} lines on a machine with the image built (under 40 expected):\n{text}"
    );
    let host = url.with_context(|| format!("no URL in:\n{text}"))?;
    ensure!(
        booted.as_deref().ok() == Some(host.as_str()),
        "the demo did not run on {app} but at {host}: {booted:?}"
    );
    let (page, api) = served.expect("the URL was found");
    ensure!(
        matches!(page, Ok((200, _))),
        "http://{host}/ answered {page:?}"
    );
    ensure!(
        matches!(api, Ok((200, _))),
        "http://{host}/api/health-check answered {api:?}"
    );
    ensure!(
        down.status.success(),
        "demo --down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    // Once the machines are gone their addresses are not ours: nothing is sent there any more.
    // What is checked is that nothing of them is left, and that a user's demo was left alone.
    for name in [&app, &db] {
        ensure!(
            th::machine(name).is_err(),
            "{name} still runs after demo --down"
        );
    }
    let left = th::leftovers_of(&[&app, &db])?;
    ensure!(left.is_empty(), "demo leftovers: {left:#?}");
    let after = users_demo();
    ensure!(
        after == before,
        "the demo scenario changed machines it did not create: before {before:?}, after {after:?}"
    );
    Ok(())
}
