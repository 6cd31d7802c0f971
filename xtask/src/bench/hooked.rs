//! The hooks phase: a backend redeploy with every hook present in `deploy/hooks/` (each
//! `true`) against the same redeploy without them, interleaved (which goes first alternates by
//! round), one ratio per round: what running the hooks costs a deploy. The baseline knows no
//! hooks: the row is the xtask's own.

use std::os::unix::fs::PermissionsExt;

use anyhow::Result;

use super::side::{Done, Op, Side};
use crate::hooks::{Hook, DIR};

/// Write every hook (`exec true`) into the side's checkout (kept out of git), or remove them.
fn hooks(side: &Side, present: bool) -> Result<()> {
    let dir = side.scratch.dir.join(DIR);
    if !present {
        // The hooks only: the directory holds the example, which the checkout tracks.
        for h in Hook::ALL {
            let p = dir.join(h.name());
            if p.exists() {
                fs_err::remove_file(p)?;
            }
        }
        return Ok(());
    }
    fs_err::write(
        side.scratch.dir.join(".git/info/exclude"),
        format!("{DIR}/\n"),
    )?;
    fs_err::create_dir_all(&dir)?;
    for h in Hook::ALL {
        let p = dir.join(h.name());
        fs_err::write(&p, "#!/bin/sh\nexec true\n")?;
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Round `n`: the hook-wrapped redeploy's seconds over the plain one's, and both commands.
pub fn measure(side: &Side, n: u32) -> Result<(f64, [Done; 2])> {
    let run = |with: bool| -> Result<Done> {
        hooks(side, with)?;
        let done = side.run(&Op::RedeployBackend);
        hooks(side, false)?;
        done
    };
    let (hooked, plain) = if n % 2 == 1 {
        let h = run(true)?;
        (h, run(false)?)
    } else {
        let p = run(false)?;
        (run(true)?, p)
    };
    Ok((hooked.secs / plain.secs, [hooked, plain]))
}
