//! Destinations: `deploy/<name>.env` files naming a set of servers and their settings, chosen
//! with `cargo xtask --to NAME` or `DEPLOY_TO` (or `deploy/default`).

use std::sync::OnceLock;

static CHOSEN: OnceLock<String> = OnceLock::new();

/// The destination this run acts on, if one was chosen.
pub fn name() -> Option<&'static str> {
    CHOSEN.get().map(String::as_str)
}

/// Record the destination this run acts on (once, before any command runs).
pub fn choose(name: String) {
    let _ = CHOSEN.set(name);
}
