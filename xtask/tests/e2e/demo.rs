//! The README's "run it" command: `cargo xtask demo` boots, provisions and deploys, the URL it
//! prints serves the app through nginx, and `demo --down` leaves no machine behind.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::support::{http_get, xtask_bin};
use crate::Ctx;

pub fn up_serves_and_down_cleans(_ctx: &mut Ctx) -> Result<()> {
    let out = Command::new(xtask_bin())
        .arg("demo")
        .env("CI", "true")
        .output()
        .context("running cargo xtask demo")?;
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
    let down = Command::new(xtask_bin())
        .args(["demo", "--down"])
        .output()?;
    ensure!(out.status.success(), "demo failed:\n{text}");
    let host = url.with_context(|| format!("no URL in:\n{text}"))?;
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
    // What is checked is that nothing of them is left.
    let status = Command::new(xtask_bin())
        .args(["testhost", "status"])
        .output()?;
    let listing = String::from_utf8_lossy(&status.stdout);
    ensure!(
        !listing
            .lines()
            .any(|l| l.starts_with("app ") || l.starts_with("db ")),
        "demo machines still listed:\n{listing}"
    );
    let left = xtask::testhost::leftovers()?;
    ensure!(
        !left.iter().any(|l| l.contains("/app")
            || l.contains("ve-app")
            || l.contains("/db")
            || l.contains("ve-db")),
        "demo leftovers: {left:?}"
    );
    Ok(())
}
