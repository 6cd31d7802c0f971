use super::*;

#[test]
fn reply_takes_key_value_lines_and_skips_events() {
    let r = Reply::parse(
        "current=20261128T101500Z\nnoise\nrelease=a\nrelease=b\nx=1=2\n1700000000000\tstep\tseed\tstart\tkey=value\njob.event=1\tinfo\ta=b\n",
    );
    assert_eq!(
        r.get("job.event"),
        Some("1\tinfo\ta=b"),
        "a value keeps its tabs"
    );
    assert_eq!(r.get("current"), Some("20261128T101500Z"));
    assert_eq!(r.all("release"), vec!["a", "b"]);
    assert_eq!(r.get("x"), Some("1=2"));
    assert_eq!(r.get("missing"), None);
    assert_eq!(r.pairs.len(), 5, "{:?}", r.pairs);
}

#[test]
fn deploy_calls_carry_only_contract_keys() {
    let c = Call::deploy("probe", &[("root", "/opt/innercontext".into())]);
    assert_eq!(c.render(), "scripts/deploy.sh probe root=/opt/innercontext");
    let c = Call::deploy("unlock", &[("deployer", "eve's laptop; $(reboot)".into())]);
    assert!(c
        .render()
        .ends_with(r#"'deployer=eve'\''s laptop; $(reboot)'"#));
    let line = c.line();
    assert!(line.starts_with("bash -c '"));
    assert!(line.ends_with(r#" deploy.sh unlock 'deployer=eve'\''s laptop; $(reboot)'"#));
}

#[test]
#[should_panic(expected = "takes no option 'frobnicate'")]
fn unknown_keys_are_a_bug() {
    Call::deploy("probe", &[("frobnicate", "1".into())]);
}

/// Every call the deployer and setup-server send, each as large as it gets: the deploy calls
/// with every key at a generous size (a hundred releases to prune), setup-server's with the
/// repository's units, nginx site, sudoers and log reader, a certificate chain of 8 KB, and a
/// deploy key of 4 KB.
fn largest_calls() -> Vec<Call> {
    use crate::setup_server::{calls as s, inputs};
    let big = |k: &str| match k {
        "prune" => (0..100)
            .map(|i| format!("20261128T1{i:05}Z"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "x".repeat(256),
    };
    let mut calls: Vec<Call> = crate::contract::SUBS
        .iter()
        .map(|sub| {
            let opts: Vec<(&str, String)> = sub.keys.iter().map(|k| (*k, big(k))).collect();
            Call::deploy(sub.name, &opts)
        })
        .collect();
    let root = crate::project_root();
    let mut units = Vec::new();
    for e in root.join("systemd").read_dir_utf8().unwrap() {
        let e = e.unwrap();
        if inputs::is_unit_file(e.file_name()) {
            let text = fs_err::read_to_string(e.path()).unwrap();
            units.push((
                e.file_name().to_string(),
                inputs::render_unit(&text, "/opt/ic"),
            ));
        }
    }
    assert!(units.len() >= 4, "{units:?}");
    let nginx =
        fs_err::read_to_string(root.join(crate::contract::layout::NGINX_SITE_SOURCE)).unwrap();
    let sudoers = fs_err::read_to_string(root.join(inputs::SUDOERS_SOURCE)).unwrap();
    let tls = inputs::Tls {
        cert: format!(
            "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
            format!("{}\n", "A".repeat(63)).repeat(128)
        ),
        key_path: "/k".into(),
        key_sha256: "a".repeat(64),
        redirect: true,
    };
    let key = format!("ssh-rsa {} a very long comment", "A".repeat(4096));
    calls.extend([
        s::packages_call(),
        s::user_call("/opt/ic"),
        s::key_call(
            "/opt/ic",
            &crate::setup_server::KeyPlan::Set(vec![key.clone(); 4]),
        ),
        s::journal_call(),
        s::sudoers_call(&sudoers),
        s::units_call("/opt/ic", &units, crate::config::HostRole::Secondary),
        s::nginx_call(&nginx),
        s::tls_call(&tls),
        s::verify_call("/opt/ic", &units),
    ]);
    let checked: Vec<Call> = calls
        .iter()
        .filter(|c| std::ptr::eq(c.script, &SETUP))
        .map(s::checked)
        .collect();
    calls.extend(checked);
    calls
}

/// The kernel takes no single argument over 128 KiB (MAX_ARG_STRLEN), and sshd hands the whole
/// command line to the login shell as one (`$SHELL -c LINE`); the deploy job is then started
/// again with the script as one argument of `bash -c`. Half of it is the bound.
#[test]
fn the_largest_command_line_is_at_most_64_kib() {
    const BOUND: usize = 64 * 1024;
    let mut sizes: Vec<(usize, String)> = largest_calls()
        .iter()
        .map(|c| (c.line().len(), format!("{} {}", c.script.name, c.sub)))
        .collect();
    sizes.sort();
    let (largest, which) = sizes.last().unwrap();
    assert!(
        *largest <= BOUND,
        "the largest command line is {largest} bytes ({which}), over {BOUND}: {sizes:?}"
    );
}

#[test]
fn base64_is_the_standard_one() {
    for input in [
        &b""[..],
        b"f",
        b"fo",
        b"foo",
        b"foob",
        b"fooba",
        b"foobar",
        &[0, 255, 128, 7],
    ] {
        let out = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(input)?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            base64(input),
            String::from_utf8(out.stdout).unwrap(),
            "{input:?}"
        );
    }
}

/// Run `line` (a remote command line) with a local bash, as sshd's login shell does, with
/// `stdin`; (status, stdout).
fn run_here(line: &str, stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("bash")
        .args(["-c", line])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

static PROBE: Script = Script {
    name: "probe.sh",
    text: || {
        // What the deploy script relies on: $0, the arguments, stdin, and starting itself
        // again (as the detached job) from BASH_EXECUTION_STRING, which must stay small.
        r#"set -euo pipefail
echo "name=$0 args=$# first=$1 last=${!#}"
if [ "$1" = again ]; then echo "started again with $2"; exit 0; fi
read -r line; echo "stdin=$line"
echo "bootstrap=${#BASH_EXECUTION_STRING}"
SELF=(bash -c "$BASH_EXECUTION_STRING" probe.sh)
"${SELF[@]}" again "it's $(printf 'x%.0s' {1..3})"
"#
        .to_string()
    },
    packed: OnceLock::new(),
};

#[test]
fn the_bootstrap_runs_the_script_as_bash_c_would() {
    let call = Call::new(
        &PROBE,
        "sub",
        ["a b".to_string(), "it's; $(reboot)".to_string()],
    );
    let line = call.line();
    assert!(
        line.starts_with("bash -c 'ic_script__=$(printf %s '\\''"),
        "{line}"
    );
    assert!(!line.contains("echo \"name="), "the text travels packed");
    let (status, out) = run_here(&line, "from the deployer\n");
    assert_eq!(status, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "name=probe.sh args=3 first=sub last=it's; $(reboot)"
    );
    assert_eq!(lines[1], "stdin=from the deployer", "stdin is the caller's");
    let size: usize = lines[2]
        .strip_prefix("bootstrap=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size < 4096, "{size}");
    assert_eq!(lines[3], "name=probe.sh args=2 first=again last=it's xxx");
    assert_eq!(lines[4], "started again with it's xxx");
}

#[test]
fn a_payload_that_does_not_unpack_runs_nothing() {
    let good = bootstrap(DEPLOY.packed().unwrap());
    // Cut short, or one character changed: gzip's check fails before any line runs.
    let cut = good.replacen("' | base64", "AAAA' | base64", 1).replacen(
        &DEPLOY.packed().unwrap()[..400],
        &DEPLOY.packed().unwrap()[..200],
        1,
    );
    let line = quote::join([
        "bash",
        "-c",
        &cut,
        "deploy.sh",
        "probe",
        "root=/nonexistent",
    ]);
    let (status, out) = run_here(&line, "");
    assert_eq!(status, 1);
    assert_eq!(
        out,
        "error=the script sent with the call did not unpack on this host (base64 -d | gzip -dc)\n"
    );
}

#[test]
fn the_scripts_unpack_to_their_text() {
    for script in [&DEPLOY, &SETUP] {
        let line = quote::join([
            "bash",
            "-c",
            &format!(
                "printf %s '{}' | base64 -d | gzip -dc",
                script.packed().unwrap()
            ),
        ]);
        let (status, out) = run_here(&line, "");
        assert_eq!(status, 0);
        assert_eq!(out, (script.text)(), "{}", script.name);
    }
}
