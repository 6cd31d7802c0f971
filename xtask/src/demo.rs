//! TODO

use anyhow::Result;
use xshell::Shell;

use crate::flags::Demo;

pub fn run(_cmd: Demo, _sh: &Shell) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
