//! Shared by the unit tests of setup-server's step files.

use super::facts::Facts;
use super::inputs::{Inputs, SUDOERS_SOURCE};
use crate::remote::Reply;

/// Inputs with the repository's sudoers source and nothing else.
pub fn inputs() -> Inputs {
    let root = crate::project_root();
    Inputs {
        deploy_keys: vec![],
        add_keys: vec![],
        backend_env: None,
        frontend_env: None,
        sudoers_path: root.join(SUDOERS_SOURCE),
        sudoers: fs_err::read_to_string(root.join(SUDOERS_SOURCE)).unwrap(),
        units: vec![],
        nginx: String::new(),
        tls: None,
    }
}

/// What the preflight reports on a fresh Debian 12 host as root.
pub fn facts() -> Facts {
    Facts::from_reply(&Reply::parse(
        "os_id=debian\nos_version=12\nos_name=Debian GNU/Linux 12 (bookworm)\nroot=direct\nroot_user=root\nsystemd=yes\narch=x86_64\nnode=\nuv=\nuser=no\nbackend_env=missing\nfrontend_env=missing\nkeys=0\nrecorded=0\nsudoers=valid\n",
    ))
    .unwrap()
}
