//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::Testhost;

pub fn run(_cmd: Testhost, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
