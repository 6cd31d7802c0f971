//! What "healthy" means after a restart: every unit `active` and staying so, and every HTTP
//! probe answering 2xx, polled on the server until a deadline (`cmd_health` in
//! scripts/deploy.sh does the polling). `systemctl restart` returning 0 proves nothing.

use crate::flags::Scope;

pub const API_UNIT: &str = "innercontext";
pub const WEB_UNIT: &str = "innercontext-node";
pub const WORKER_UNIT: &str = "innercontext-pricing-worker";
pub const ALL_UNITS: [&str; 3] = [API_UNIT, WEB_UNIT, WORKER_UNIT];

pub const API_PROBE: &str = "http://127.0.0.1:8000/health-check";
pub const WEB_PROBE: &str = "http://127.0.0.1:3000/";
/// The whole product is checked whatever was restarted: the frontend's page needs the API.
pub const PROBES: [&str; 2] = [API_PROBE, WEB_PROBE];

/// Consecutive good polls (0.5 s apart) before a release counts as healthy.
pub const STABLE_POLLS: u32 = 4;

/// The units a deploy of `scope` must restart.
pub fn units_to_restart(scope: Scope) -> Vec<&'static str> {
    let mut units = Vec::new();
    if scope.backend() {
        units.extend([API_UNIT, WORKER_UNIT]);
    }
    if scope.frontend() {
        units.push(WEB_UNIT);
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_affected_units_restart() {
        assert_eq!(
            units_to_restart(Scope::Backend),
            vec!["innercontext", "innercontext-pricing-worker"]
        );
        assert_eq!(units_to_restart(Scope::Frontend), vec!["innercontext-node"]);
        assert_eq!(units_to_restart(Scope::All).len(), 3);
    }
}
