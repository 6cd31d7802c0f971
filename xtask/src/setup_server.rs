//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::SetupServer;

pub fn run(_cmd: SetupServer, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
