//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::Bench;

pub fn run(_cmd: Bench, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
