//! The latency proxy: this kernel has no netem, so benchmarks simulate a WAN link with a TCP
//! proxy in front of a machine's sshd that holds every chunk for a fixed time in each
//! direction. Chunks wait in a queue with their due time, so the link keeps its bandwidth:
//! only latency is added.
//!
//! `delay NAME MS` starts it detached (`xtask testhost proxy ...`, a hidden subcommand),
//! records its PID, and points the machine's ssh_config at it; `delay NAME 0` and `down` stop it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::Shell;

use super::layout::{machine_dir, XTASK_BIN_ENV};
use super::machine::Machine;
use super::{machine, render, sys};

/// Listen on `listen` (port 0: any free port), write the port to `port_file`, and forward
/// every connection to `to`, each direction delayed by `millis`. Runs until killed.
pub fn serve(listen: &str, to: &str, millis: u32, port_file: &Utf8Path) -> Result<()> {
    let target: SocketAddr = to
        .parse()
        .with_context(|| format!("proxy target '{to}' must be ADDRESS:PORT"))?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("proxy cannot listen on {listen}"))?;
    let port = listener.local_addr()?.port();
    sys::write_atomic(port_file, &format!("{port}\n"), 0o644)?;
    let delay = Duration::from_millis(u64::from(millis));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        std::thread::spawn(move || {
            if let Err(e) = connect(client, target, delay) {
                eprintln!("proxy: {e:#}");
            }
        });
    }
    Ok(())
}

fn connect(client: TcpStream, target: SocketAddr, delay: Duration) -> Result<()> {
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pump(client.try_clone()?, server.try_clone()?, delay);
    pump(server, client, delay);
    Ok(())
}

/// Copy `from` to `to`, each chunk delivered `delay` after it was read; EOF is passed on
/// (as a write shutdown) after the same delay.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let reader_side = from.try_clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match from.read(&mut buf) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if tx.send((Instant::now() + delay, chunk)).is_err() || end {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        // The other side is gone: stop reading too.
                        let _ = to.shutdown(Shutdown::Both);
                        if let Ok(r) = &reader_side {
                            let _ = r.shutdown(Shutdown::Both);
                        }
                        break;
                    }
                }
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    break;
                }
            }
        }
    });
}

fn pid_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("proxy.pid")
}

fn port_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("proxy.port")
}

fn delay_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("delay")
}

/// What identifies the proxy of machine `name` in a command line.
pub fn marker(name: &str) -> String {
    port_file(name).to_string()
}

/// The running proxy of machine `name`.
pub fn live_pid(name: &str) -> Option<u32> {
    sys::live_pid(&pid_file(name), &marker(name))
}

pub fn current_delay(name: &str) -> Option<u32> {
    live_pid(name)?;
    current_delay_file(name)
}

/// The delay recorded for machine `name`, whether or not its proxy still runs.
pub fn current_delay_file(name: &str) -> Option<u32> {
    std::fs::read_to_string(delay_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stop the proxy of machine `name` (by its PID file, and any other found by its command line).
pub fn stop(name: &str) -> Result<()> {
    let mut pids: Vec<u32> = live_pid(name).into_iter().collect();
    pids.extend(
        sys::processes_mentioning(&marker(name))
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(" testhost proxy "))
            .map(|(p, _)| p),
    );
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        sys::terminate(pid, Duration::from_secs(2))?;
    }
    for f in [pid_file(name), port_file(name), delay_file(name)] {
        if f.exists() {
            fs_err::remove_file(f)?;
        }
    }
    Ok(())
}

/// Set the delay in front of `m`'s sshd: stop any proxy, start one if `millis` > 0, and
/// rewrite the ssh_config to go through it (or straight to the machine).
pub fn set_delay(_sh: &Shell, m: &Machine, millis: u32) -> Result<()> {
    stop(&m.name)?;
    if millis == 0 {
        return machine::write_ssh_config(m, None);
    }
    let bin = xtask_binary()?;
    let argv: Vec<String> = vec![
        bin.to_string(),
        "testhost".into(),
        "proxy".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--to".into(),
        format!("{}:22", m.ip),
        "--delay".into(),
        millis.to_string(),
        "--port-file".into(),
        port_file(&m.name).to_string(),
    ];
    let log = machine_dir(&m.name).join("proxy.log");
    sys::spawn_detached(&render::detach_script(&pid_file(&m.name), &argv), &log)?;
    let mut port = None;
    let started = sys::wait_for(Duration::from_secs(10), || {
        port = std::fs::read_to_string(port_file(&m.name))
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        port.is_some()
    });
    let (true, Some(port)) = (started, port) else {
        let _ = stop(&m.name);
        bail!("the delay proxy for {} did not start: see {log}", m.name);
    };
    // The proxy must reach sshd: read the banner through it.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = machine::ssh_banner(
        addr,
        Duration::from_secs(5) + 2 * Duration::from_millis(u64::from(millis)),
    ) {
        let _ = stop(&m.name);
        return Err(e.context(format!(
            "the delay proxy for {} does not reach its sshd",
            m.name
        )));
    }
    sys::write_atomic(&delay_file(&m.name), &format!("{millis}\n"), 0o644)?;
    machine::write_ssh_config(m, Some(port))
}

/// The xtask executable that runs the proxy: this one, unless we are a test binary.
fn xtask_binary() -> Result<Utf8PathBuf> {
    if let Ok(p) = std::env::var(XTASK_BIN_ENV) {
        return Ok(Utf8PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let exe = Utf8PathBuf::from_path_buf(exe)
        .map_err(|p| anyhow::anyhow!("executable path {} is not UTF-8", p.display()))?;
    if exe.file_stem() == Some("xtask") {
        return Ok(exe);
    }
    // Test binaries live in target/<profile>/deps, next to which cargo puts the xtask binary.
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("xtask");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the xtask binary to run the delay proxy: build it (cargo build -p xtask) or set {XTASK_BIN_ENV}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: replies arrive at least two delays later, and a burst
    /// of chunks is not serialized one delay per chunk.
    #[test]
    fn proxy_delays_each_direction_without_limiting_throughput() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => s.write_all(&buf[..n]).unwrap(),
                        }
                    }
                });
            }
        });
        let dir = std::env::temp_dir().join(format!("th-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = Utf8PathBuf::from_path_buf(dir.join("port")).unwrap();
        let pf = port_file.clone();
        let to = echo_addr.to_string();
        std::thread::spawn(move || serve("127.0.0.1:0", &to, 100, &pf));
        assert!(sys::wait_for(Duration::from_secs(5), || port_file.exists()));
        let port: u16 = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_nodelay(true).unwrap();
        let start = Instant::now();
        for i in 0..20u8 {
            c.write_all(&[i; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut got = vec![0u8; 2000];
        c.read_exact(&mut got).unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        // 20 chunks one delay each would take 20 x 200 ms.
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(got[1999], 19);
        // EOF travels through too.
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
