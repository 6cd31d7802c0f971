//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::Deploy;

pub fn run(_cmd: Deploy, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
