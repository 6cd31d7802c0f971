//! What "healthy" means after a restart: every unit `active` and staying so, and every HTTP
//! probe answering 2xx, polled on the server until a deadline (see `cmd_health` in
//! scripts/deploy.sh). `systemctl restart` returning 0 proves nothing on its own.

use crate::flags::Scope;

pub const API_UNIT: &str = "innercontext";
pub const WEB_UNIT: &str = "innercontext-node";
pub const WORKER_UNIT: &str = "innercontext-pricing-worker";
pub const ALL_UNITS: [&str; 3] = [API_UNIT, WEB_UNIT, WORKER_UNIT];

pub const API_PROBE: &str = "http://127.0.0.1:8000/health-check";
pub const WEB_PROBE: &str = "http://127.0.0.1:3000/";

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

/// Arguments of `deploy.sh health`: the whole product is checked whatever was restarted,
/// since the frontend's page depends on the API.
pub fn check_args(timeout_secs: u64) -> Vec<String> {
    let mut args = vec![timeout_secs.to_string(), STABLE_POLLS.to_string()];
    args.extend(ALL_UNITS.iter().map(|u| u.to_string()));
    args.push("--".to_string());
    args.extend([API_PROBE, WEB_PROBE].map(String::from));
    args
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

    #[test]
    fn checks_cover_units_and_probes() {
        let a = check_args(60);
        assert_eq!(a[0], "60");
        let sep = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(&a[2..sep], &ALL_UNITS.map(String::from));
        assert_eq!(&a[sep + 1..], &[API_PROBE, WEB_PROBE].map(String::from));
    }
}
