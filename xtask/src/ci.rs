//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::Ci;

pub fn run(_cmd: Ci, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
