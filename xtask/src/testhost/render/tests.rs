use super::*;

#[test]
fn network_file_is_static() {
    let n = host0_network("10.213.3.2", "10.213.3.1");
    assert!(n.contains("Name=host0\n"));
    assert!(n.contains("Address=10.213.3.2/24\nGateway=10.213.3.1\n"));
    assert!(!n.contains("DHCP"));
}

#[test]
fn known_hosts_lists_name_and_address_without_comments() {
    let kh = known_hosts(
        "app",
        "10.213.1.2",
        &[
            "ssh-ed25519 AAAAC3Nza root@vm\n".into(),
            "ecdsa-sha2-nistp256 AAAAE2 root@vm".into(),
            "garbage".into(),
        ],
    );
    assert_eq!(
        kh,
        "app,10.213.1.2 ssh-ed25519 AAAAC3Nza\napp,10.213.1.2 ecdsa-sha2-nistp256 AAAAE2\n"
    );
}

#[test]
fn ssh_config_is_strict_and_lets_the_user_be_overridden() {
    let direct = Endpoint {
        host: "10.213.1.2".into(),
        port: 22,
    };
    let c = ssh_config(
        "app",
        "10.213.1.2",
        &direct,
        "/s/key/id_ed25519".into(),
        "/s/machines/app/known_hosts".into(),
    );
    let golden = "\
# Written by cargo xtask testhost for machine app; rewritten by 'testhost delay'.
Host app
    HostName 10.213.1.2
    Port 22

Host app 10.213.1.2
    User root
    IdentityFile /s/key/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /s/machines/app/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    HostKeyAlias app
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
";
    assert_eq!(c, golden);
    let proxied = ssh_config(
        "app",
        "10.213.1.2",
        &Endpoint {
            host: "127.0.0.1".into(),
            port: 40022,
        },
        "/k".into(),
        "/kh".into(),
    );
    assert!(proxied.contains("Host app\n    HostName 127.0.0.1\n    Port 40022\n"));
    assert!(proxied.contains("HostKeyAlias app\n"));
}

#[test]
fn nft_rules_are_per_machine_and_tagged() {
    let r = nft_add_machine(
        "innercontext_testhost",
        "h1tapp",
        "10.213.3.0/24",
        "10.213.0.0/16",
    );
    // Declared, never replaced: other machines' rules stay.
    assert!(r.starts_with("table inet innercontext_testhost {\n"));
    assert!(!r.contains("delete"));
    assert!(r.contains("type nat hook postrouting priority srcnat; policy accept;\n"));
    assert!(r.ends_with(
        "add rule inet innercontext_testhost postrouting ip saddr 10.213.3.0/24 ip daddr != 10.213.0.0/16 masquerade comment \"machine h1tapp\"\n"
    ));
    let listing = "table inet innercontext_testhost { # handle 7\n\
            \tchain postrouting { # handle 1\n\
            \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
            \t\tip saddr 10.213.0.0/16 ip daddr != 10.213.0.0/16 masquerade # handle 2\n\
            \t\tip saddr 10.213.3.0/24 ip daddr != 10.213.0.0/16 masquerade comment \"machine h1tapp\" # handle 5\n\
            \t\tip saddr 10.213.4.0/24 ip daddr != 10.213.0.0/16 masquerade comment \"machine h1tapp2\" # handle 6\n\
            \t}\n}\n";
    assert_eq!(
        nft_machine_rules(listing),
        vec![("h1tapp".to_string(), 5), ("h1tapp2".to_string(), 6)]
    );
    assert_eq!(nft_untagged_rules(listing), 1);
}

#[test]
fn mirrors_come_from_the_host_sources() {
    let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
    assert_eq!(
        parse_mirrors(deb822),
        Mirrors {
            debian: "http://mirror.example/debian".into(),
            security: "http://mirror.example/debian-security".into()
        }
    );
    let list = "deb [arch=amd64] http://m.example/debian bookworm main\n";
    assert_eq!(parse_mirrors(list).debian, "http://m.example/debian");
    assert_eq!(parse_mirrors(list).security, Mirrors::default().security);
    assert_eq!(parse_mirrors(""), Mirrors::default());
    let s = apt_sources(&Mirrors::default());
    assert!(s.contains("Suites: bookworm bookworm-updates\n"));
    assert!(s.contains("URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"));
}

#[test]
fn image_has_no_app_software() {
    for absent in ["nginx", "postgresql", "nodejs", "rsync"] {
        assert!(!IMAGE_PACKAGES.contains(&absent), "{absent}");
    }
    let args = debootstrap_args("/s/images/base.new".into(), "http://m/debian");
    assert_eq!(args[0], "--variant=minbase");
    assert!(args[1].contains("openssh-server,sudo,curl,ca-certificates"));
    assert_eq!(
        &args[2..],
        ["bookworm", "/s/images/base.new", "http://m/debian"]
    );
}

#[test]
fn launch_script_boots_on_a_private_overlay() {
    let l = Launch {
        name: "app".into(),
        pid_file: "/s/machines/app/pid".into(),
        cgroups: vec![
            "/sys/fs/cgroup/unified/innercontext-testhost/app".into(),
            "/sys/fs/cgroup/systemd/innercontext-testhost/app".into(),
        ],
        lower: vec!["/s/images/db".into(), "/s/images/base".into()],
        upper: "/s/machines/app/upper".into(),
        work: "/s/machines/app/work".into(),
        root: "/s/machines/app/root".into(),
    };
    let s = launch_script(&l);
    assert!(s.contains("echo $$ > /s/machines/app/pid\n"));
    assert!(s.contains("echo $$ > /sys/fs/cgroup/unified/innercontext-testhost/app/cgroup.procs\n"));
    assert!(s.contains("mount -t overlay overlay -o lowerdir=/s/images/db:/s/images/base,upperdir=/s/machines/app/upper,workdir=/s/machines/app/work /s/machines/app/root\n"));
    assert!(s.ends_with("exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --boot --directory=/s/machines/app/root --machine=app --register=no --keep-unit --network-veth --resolv-conf=copy-host --console=read-only --link-journal=no\n"));
    // The pid is written before joining the cgroups and mounting, which may fail.
    assert!(s.find("/pid").unwrap() < s.find("mount -t").unwrap());
}

#[test]
fn scripts_survive_bash() {
    for script in [
        CUSTOMIZE_BASE.to_string(),
        BUILD_DB_LAYER.to_string(),
        BUILD_PRIMED_LAYER.to_string(),
        detach_script("/tmp/a b/pid".into(), &["echo".into(), "it's".into()]),
        build_script(
            &["/sys/fs/cgroup/x".into()],
            Some((&["/l".into()], "/u".into(), "/w".into())),
            "/r".into(),
            &["sh".into(), "-c".into(), "echo $1".into()],
        ),
    ] {
        let out = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn detach_script_closes_descriptors_and_records_the_pid() {
    let dir = std::env::temp_dir().join(format!("th-detach-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = Utf8PathBuf::from_path_buf(dir.join("pid")).unwrap();
    let out_file = dir.join("out");
    let s = detach_script(
        &pid_file,
        &[
            "sh".into(),
            "-c".into(),
            format!("ls /proc/$$/fd > {}", out_file.display()),
        ],
    );
    // Give the script an extra inherited descriptor (9) that must be closed.
    let status = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("exec 9</dev/null; exec bash -c {}", quote::sh(&s)),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let fds = std::fs::read_to_string(&out_file).unwrap();
    assert!(!fds.lines().any(|l| l == "9"), "fd 9 inherited: {fds}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fleet_config_includes_each_machine_and_ssh_reads_it() {
    let dir = std::env::temp_dir().join(format!("fleet-ssh-{}", std::process::id()));
    let dir = Utf8PathBuf::from_path_buf(dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, port) in [("app1", 2201), ("app2", 2202)] {
        let f = dir.join(format!("{name}.ssh_config"));
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        let text = ssh_config(
            name,
            "10.213.9.2",
            &endpoint,
            &dir.join("key"),
            &dir.join("kh"),
        );
        std::fs::write(&f, text).unwrap();
        files.push(f);
    }
    let refs: Vec<&Utf8Path> = files.iter().map(|f| f.as_path()).collect();
    let text = fleet_ssh_config(&refs);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("Include \"/"))
            .count(),
        2,
        "{text}"
    );
    let combined = dir.join("fleet");
    std::fs::write(&combined, &text).unwrap();
    // ssh itself resolves each host through the included file (and the user override).
    if std::process::Command::new("ssh").arg("-V").output().is_ok() {
        for (host, port) in [("app1", "2201"), ("innercontext@app2", "2202")] {
            let out = std::process::Command::new("ssh")
                .args(["-G", "-F", combined.as_str(), host])
                .output()
                .unwrap();
            let conf = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{conf}");
            assert!(conf.contains(&format!("\nport {port}\n")), "{host}: {conf}");
            assert!(conf.contains("\nhostkeyalias app"), "{host}: {conf}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_balancer_retries_the_next_host_and_never_marks_one_down() {
    let c = balancer_conf("/tmp/lb".into(), 40123, &["10.213.5.2", "10.213.6.2"]);
    for want in [
        "pid /tmp/lb/nginx.pid;\n",
        "access_log /tmp/lb/access.log lb;\n",
        "log_format lb '$msec $status $upstream_addr $upstream_status $request_time';\n",
        "        server 10.213.5.2:80 max_fails=0;\n        server 10.213.6.2:80 max_fails=0;\n        keepalive 16;\n",
        "listen 127.0.0.1:40123;\n",
        "proxy_next_upstream error timeout http_502 http_503 http_504;\n",
        "proxy_set_header Connection \"\";\n",
    ] {
        assert!(c.contains(want), "no {want:?} in:\n{c}");
    }
    // nginx accepts it.
    if std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok()
    {
        let dir = std::env::temp_dir().join(format!("lb-conf-{}", std::process::id()));
        let dir = Utf8PathBuf::from_path_buf(dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("nginx.conf"),
            balancer_conf(&dir, 40123, &["10.213.5.2"]),
        )
        .unwrap();
        let out = std::process::Command::new("nginx")
            .args(["-q", "-t", "-c", dir.join("nginx.conf").as_str()])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
