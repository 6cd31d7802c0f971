//! Remote calls as values (the shape of Kamal's `Commands`): a [`Call`] names a server script,
//! a subcommand and its words; it renders to exactly the argv the remote shell receives (for
//! `--dry-run` and tests) and runs over a [`crate::ssh::Session`]. `deploy` and `setup-server`
//! both call the server this way; the script's text travels as the quoted argument of `bash -c`,
//! so nothing needs to be installed on the server first.

use crate::quote;

/// A script the server runs: its name (`$0` there) and its text.
#[derive(Debug)]
pub struct Script {
    pub name: &'static str,
    pub text: fn() -> String,
}

/// `scripts/deploy.sh` with the contract and its parts in front.
pub static DEPLOY: Script = Script {
    name: "deploy.sh",
    text: crate::contract::deploy_script,
};

/// `scripts/setup-server.sh` (run as root, or re-run through sudo by itself).
pub static SETUP: Script = Script {
    name: "setup-server.sh",
    text: setup_script,
};

fn setup_script() -> String {
    crate::setup_server::SCRIPT.to_string()
}

/// One call of a server script.
#[derive(Debug, Clone)]
pub struct Call {
    pub script: &'static Script,
    pub sub: &'static str,
    pub args: Vec<String>,
}

impl Call {
    pub fn new(
        script: &'static Script,
        sub: &'static str,
        args: impl IntoIterator<Item = String>,
    ) -> Call {
        Call {
            script,
            sub,
            args: args.into_iter().collect(),
        }
    }

    /// A `scripts/deploy.sh` call with `key=value` options; the keys must be the contract's.
    pub fn deploy(sub: &'static str, opts: &[(&str, String)]) -> Call {
        let allowed = crate::contract::keys(sub);
        for (k, _) in opts {
            assert!(
                allowed.contains(k),
                "deploy.sh {sub} takes no option '{k}' (see contract.rs)"
            );
        }
        Call::new(&DEPLOY, sub, opts.iter().map(|(k, v)| format!("{k}={v}")))
    }

    /// What the call does, in the words of the step that makes it (for errors: never the
    /// script's internal subcommand names).
    pub fn what(&self) -> String {
        if !std::ptr::eq(self.script, &DEPLOY) {
            return format!("the '{}' step", self.sub);
        }
        match self.sub {
            "probe" => "reading the server's state",
            "run" => "starting the server job",
            "follow" => "following the server job",
            "unlock" => "removing the deploy lock",
            "log" => "reading deploy.log",
            "db" => "reading the database's revision",
            _ => "the server job",
        }
        .to_string()
    }

    /// The argument vector after the script name.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![self.sub.to_string()];
        v.extend(self.args.iter().cloned());
        v
    }

    /// How the call reads in a plan: exactly the words the remote shell receives.
    pub fn render(&self) -> String {
        format!("scripts/{} {}", self.script.name, quote::join(self.argv()))
    }

    /// The remote command line: `bash -c TEXT NAME ARGS...`, every word quoted.
    pub fn line(&self) -> String {
        let mut words = vec![
            "bash".to_string(),
            "-c".to_string(),
            (self.script.text)(),
            self.script.name.to_string(),
        ];
        words.extend(self.argv());
        quote::join(&words)
    }
}

/// The parsed result of a remote call: `key=value` lines on stdout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub pairs: Vec<(String, String)>,
}

impl Reply {
    pub fn parse(stdout: &str) -> Reply {
        let pairs = stdout
            .lines()
            .filter(|l| !l.contains('\t'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Reply { pairs }
    }
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The lines `PREFIX.KEY=VALUE` as (KEY, VALUE).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.pairs.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('.'))
                .map(|k| (k, v.as_str()))
        })
    }
    pub fn push(&mut self, line: &str) {
        if let Some((k, v)) = line.split_once('=') {
            self.pairs.push((k.to_string(), v.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_takes_key_value_lines_and_skips_events() {
        let r = Reply::parse(
            "current=20261128T101500Z\nnoise\nrelease=a\nrelease=b\nx=1=2\n1700000000000\tstep\tseed\tstart\n",
        );
        assert_eq!(r.get("current"), Some("20261128T101500Z"));
        assert_eq!(r.all("release"), vec!["a", "b"]);
        assert_eq!(r.get("x"), Some("1=2"));
        assert_eq!(r.get("missing"), None);
        assert_eq!(r.pairs.len(), 4);
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
}
