//! The shape of a command's table, and what is derived from it: the reading of its words (each
//! value checked as it comes), its usage lines and its help, laid out one way for every command.

use super::{refuse, Choice, Command, UsageError};
use std::iter::once;

type S = &'static str;
type Error = UsageError;

/// Help lines end by column `LINE`; the docs of words (commands, subcommands, parts, units)
/// start at column 2 + `WORDS`, those of options at 2 + `OPTIONS` (after a longer term: on a
/// line of their own).
const LINE: usize = 100;
const WORDS: usize = 15;
const OPTIONS: usize = 25;

/// A name from a list: its index in `names`, or the error naming the valid choices.
pub(super) fn pick(what: &str, got: &str, names: &[&str]) -> Result<usize, UsageError> {
    let index = names.iter().position(|n| *n == got);
    index.ok_or_else(|| UsageError::choice(what, got, names))
}

/// The least, the most, and what they count.
pub(super) type Range = (u32, u32, S);

/// A number in `range`, or `invalid WHAT 'GOT': use MIN-MAX UNIT`.
pub(super) fn number(what: &str, got: &str, range: Range) -> Result<u32, UsageError> {
    let (min, max, unit) = range;
    let n = got.parse().ok().filter(|n| (min..=max).contains(n));
    n.ok_or_else(|| UsageError(format!("invalid {what} '{got}': use {min}-{max} {unit}")))
}

/// What a flag takes after it, and what the help calls that (META).
#[derive(Clone, Copy)]
pub(super) enum Value {
    Switch,
    Num(S, Range),
    /// One name of a list, shown `a|b`: what an error calls one, the names.
    Pick(S, &'static [S]),
    /// Names of a list, comma separated, shown `META[,META...]`.
    List(S, S, &'static [S]),
    /// A path or free text, checked where there is a check.
    Text(S, Option<Check>),
}

type Check = fn(&str) -> Result<(), UsageError>;

/// One name of `T`; names of `T`, comma separated.
pub(super) const fn one<T: Choice>() -> Value {
    Value::Pick(T::WHAT, T::NAMES)
}
pub(super) const fn list<T: Choice>(meta: S) -> Value {
    Value::List(meta, T::WHAT, T::NAMES)
}

/// How a flag shows in a usage line: `[--flag META]`, `[--flag META]...` (repeatable), on a
/// line of its own (a mode of its own), or `[--flag META | --other]` (given together: an error).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Shape {
    Word,
    Many,
    Alone,
    Or(S),
}

/// One flag: its spellings (`-n, --lines`: the short one first), what it takes, its line under
/// Options ("": hidden), its shape in the usage line.
pub(super) struct Flag {
    pub names: S,
    pub value: Value,
    pub doc: S,
    pub shape: Shape,
}

pub(super) const fn flag(names: S, value: Value, doc: S) -> Flag {
    let shape = Shape::Word;
    Flag {
        names,
        value,
        doc,
        shape,
    }
}

impl Flag {
    pub const fn shape(mut self, shape: Shape) -> Flag {
        self.shape = shape;
        self
    }
    /// The long spelling: how the tables and the parse functions name it.
    pub fn long(&self) -> S {
        self.names.rsplit(", ").next().unwrap_or(self.names)
    }
    pub fn takes_value(&self) -> bool {
        !matches!(self.value, Value::Switch)
    }
    pub fn spelled(&self, arg: &str) -> bool {
        self.names.split(", ").any(|n| n == arg)
    }
    /// What follows its name: ` META`.
    fn meta(&self) -> String {
        match self.value {
            Value::Switch => String::new(),
            Value::Num(m, _) | Value::Text(m, _) => format!(" {m}"),
            Value::Pick(_, names) => format!(" {}", names.join("|")),
            Value::List(m, ..) => format!(" {m}[,{m}...]"),
        }
    }
    /// `-n N`: as a usage line shows it, by its first spelling.
    pub fn usage(&self) -> String {
        let first = self.names.split(", ").next();
        first.unwrap_or_default().to_string() + &self.meta()
    }
    /// Its value after `arg` ("" for a switch), checked.
    fn read(&self, arg: &str, args: &mut impl Iterator<Item = String>) -> Result<String, Error> {
        if !self.takes_value() {
            return Ok(String::new());
        }
        let v = args.next().filter(|v| !v.starts_with("--"));
        let v = v.ok_or_else(|| UsageError(format!("{arg} needs a value")))?;
        let each = |what, names| {
            v.split(',')
                .try_for_each(|w| pick(what, w, names).map(drop))
        };
        match self.value {
            Value::Num(_, range) => number(arg, &v, range).map(drop),
            Value::Pick(what, names) => pick(what, &v, names).map(drop),
            Value::List(_, what, names) => each(what, names),
            Value::Text(_, Some(check)) => check(&v),
            _ => Ok(()),
        }?;
        Ok(v)
    }
}

/// A subcommand: its name, its positional words as the usage shows them, the long names of
/// the command's flags that apply to it (in usage order) and its help line. Without a help
/// line it is hidden: parsed, but neither in the help nor among the choices an error names.
pub(super) struct Sub {
    pub name: S,
    pub args: S,
    pub flags: &'static [S],
    pub doc: S,
}

pub(super) const fn sub(name: S, args: S, flags: &'static [S], doc: S) -> Sub {
    Sub {
        name,
        args,
        flags,
        doc,
    }
}

/// A part of a help between its usage lines and its options: prose as written, words with
/// their docs after a heading ("": none), or the visible subcommands with their docs.
pub(super) enum Section {
    Text(S),
    Words(S, &'static [&'static [(S, S)]]),
    Subs,
}

/// One command: the table the parser reads and the help is rendered from.
pub(super) struct Cmd {
    pub name: S,
    /// Its line in `cargo xtask --help`, and the first line of its own help.
    pub about: S,
    pub title: S,
    /// Positional words in its usage line (`...` at the end: any number of them).
    pub args: S,
    pub flags: &'static [Flag],
    pub subs: &'static [Sub],
    /// The subcommand when none is named.
    pub default: Option<S>,
    /// What its help says before the options; the environment variables it reads, after them.
    pub help: &'static [Section],
    pub env: &'static [(S, S)],
    pub parse: fn(Vec<String>) -> Result<Command, UsageError>,
}

/// What a table leaves out.
pub(super) const NONE: Cmd = Cmd {
    name: "",
    about: "",
    title: "",
    args: "",
    flags: &[],
    subs: &[],
    default: None,
    help: &[],
    env: &[],
    parse: |_| unreachable!("every table names its parse function"),
};

/// Words from column `col` joined by spaces; one that would end past `LINE` starts a line at
/// column `indent`.
fn fill<'a>(words: impl IntoIterator<Item = &'a str>, mut col: usize, indent: usize) -> String {
    let mut out = String::new();
    for w in words.into_iter().filter(|w| !w.is_empty()) {
        if !out.is_empty() && col + 1 + w.len() > LINE {
            (out, col) = (out + "\n" + &" ".repeat(indent), indent);
        } else if !out.is_empty() {
            (out, col) = (out + " ", col + 1);
        }
        (out, col) = (out + w, col + w.len());
    }
    out
}

/// `  TERM  DOC` with the docs at column `2 + width`, filled to the line's end.
fn rows<'a>(out: &mut String, width: usize, rows: impl Iterator<Item = (String, &'a str)>) {
    for (term, doc) in rows {
        let pad = match term.len() + 2 > width {
            true => format!("\n{}", " ".repeat(2 + width)),
            false => " ".repeat(width - term.len()),
        };
        let doc = fill(doc.split(' '), 2 + width, 2 + width);
        *out += &format!("  {term}{pad}{doc}\n");
    }
}

impl Cmd {
    pub fn flag(&self, long: &str) -> &'static Flag {
        let flag = self.flags.iter().find(|f| f.long() == long);
        flag.expect("a flag of the table")
    }
    /// `: it applies to 'CMD SUB', 'CMD SUB' and 'CMD SUB'`: the visible subcommands that take
    /// the flag `long` ("" when none does).
    pub fn applies(&self, long: &str) -> String {
        let subs = self.visible().filter(|s| s.flags.contains(&long));
        let names: Vec<String> = subs
            .map(|s| format!("'{} {}'", self.name, s.name))
            .collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => format!(": it applies to {last}"),
            Some((last, rest)) => format!(": it applies to {} and {last}", rest.join(", ")),
        }
    }
    pub fn visible(&self) -> impl Iterator<Item = &'static Sub> {
        self.subs.iter().filter(|s| !s.doc.is_empty())
    }
    /// The subcommand named `word` (hidden ones too), or the error naming the visible ones.
    pub fn sub(&self, word: &str) -> Result<&'static Sub, UsageError> {
        let names: Vec<S> = self.visible().map(|s| s.name).collect();
        let what = format!("{} command", self.name);
        let sub = self.subs.iter().find(|s| s.name == word);
        sub.ok_or_else(|| UsageError::choice(&what, word, &names))
    }
    /// `cargo xtask NAME WORDS… [--x] [--a N | --b] [--f X]...`, wrapped under its first word.
    fn line(&self, words: &[&str], flags: &[&Flag]) -> String {
        let paired = |f: &&&Flag| flags.iter().any(|o| o.shape == Shape::Or(f.long()));
        let word = |f: &&Flag| match f.shape {
            Shape::Many => format!("[{}]...", f.usage()),
            Shape::Or(other) => format!("[{} | {}]", f.usage(), self.flag(other).usage()),
            _ => format!("[{}]", f.usage()),
        };
        let flags: Vec<String> = flags.iter().filter(|f| !paired(f)).map(word).collect();
        let start = format!("cargo xtask {}", self.name);
        // Words after a `--` (exec's command) come after the flags, as they are given.
        let (after, words): (Vec<&str>, Vec<&str>) =
            words.iter().partition(|w| w.starts_with("-- "));
        let words = once(start.as_str()).chain(words);
        let words = words.chain(flags.iter().map(String::as_str)).chain(after);
        fill(words, "Usage: ".len(), "Usage: ".len() + start.len() + 1)
    }
    /// A line for the command, and one for each flag that is a mode of its own; with
    /// subcommands, a line for each, those with the default's words sharing its line: `[a|b]`.
    fn usage(&self) -> Vec<String> {
        if self.subs.is_empty() {
            let flags = self.flags.iter();
            let (alone, flags): (Vec<_>, Vec<_>) = flags.partition(|f| f.shape == Shape::Alone);
            let alone = alone.into_iter().map(|f| self.line(&[&f.usage()], &[]));
            return once(self.line(&[self.args], &flags)).chain(alone).collect();
        }
        let mut heads: Vec<(String, &Sub)> = Vec::new();
        for s in self.visible() {
            match heads.last_mut() {
                Some((head, d)) if self.default == Some(d.name) && d.flags == s.flags => {
                    *head = format!("[{}|{}]", head.trim_matches(['[', ']']), s.name);
                }
                _ => heads.push((s.name.to_string(), s)),
            }
        }
        let line = |(head, s): (String, &Sub)| {
            let flags: Vec<&Flag> = s.flags.iter().map(|l| self.flag(l)).collect();
            self.line(&[&head, s.args], &flags)
        };
        heads.into_iter().map(line).collect()
    }
    /// `cargo xtask NAME --help`.
    pub fn help(&self) -> String {
        let mut out = format!("cargo xtask {}: {}\n\n", self.name, self.title);
        for (i, line) in self.usage().iter().enumerate() {
            out += &format!("{}{line}\n", ["Usage: ", "       "][usize::from(i > 0)]);
        }
        let default = |s: &Sub| ["", " (default)"][usize::from(self.default == Some(s.name))];
        let subs = || {
            self.visible()
                .map(move |s| (s.name.to_string() + default(s), s.doc))
        };
        for section in self.help {
            out += "\n";
            match section {
                Section::Text(text) => out += &format!("{text}\n"),
                Section::Words(head, lists) => {
                    out += &format!("{head}{}", ["\n", ""][usize::from(head.is_empty())]);
                    let words = lists.iter().flat_map(|l| l.iter());
                    rows(&mut out, WORDS, words.map(|(w, doc)| (w.to_string(), *doc)));
                }
                Section::Subs => rows(&mut out, WORDS, subs()),
            }
        }
        let flags = self.flags.iter().filter(|f| !f.doc.is_empty());
        let flags = flags.map(|f| (f.names.to_string() + &f.meta(), f.doc));
        let help = ("-h, --help".to_string(), "print this help");
        out += "\nOptions:\n";
        rows(&mut out, OPTIONS, flags.chain([help]));
        if !self.env.is_empty() {
            out += "\nEnvironment:\n";
            rows(
                &mut out,
                OPTIONS,
                self.env.iter().map(|(v, doc)| (v.to_string(), *doc)),
            );
        }
        out
    }
}

/// `cargo xtask` and its `--help`: the commands.
pub(super) fn top_help(commands: &[Cmd]) -> String {
    let mut out = "cargo xtask: build, test and deploy the innercontext monorepo\n\n\
                   Usage: cargo xtask [--to DESTINATION] <COMMAND> [ARGS]\n\nCommands:\n"
        .to_string();
    let names = commands.iter().map(|c| (c.name.to_string(), c.about));
    rows(&mut out, WORDS, names);
    out + "\nOptions:\n  --to NAME      act on the destination deploy/NAME.env (or DEPLOY_TO=NAME; default:\n                 the name in deploy/default, else the environment alone)\n\n\
           Run 'cargo xtask <COMMAND> --help' for the arguments of one command.\n"
}

/// What was given: the flags in order with their values (checked; "" for a switch), and the
/// positional words.
#[derive(Default)]
pub(super) struct Given {
    /// `ci`, `deploy rollback`: the command as errors name it.
    pub label: String,
    pub flags: Vec<(&'static Flag, String)>,
    pub words: Vec<String>,
}

impl Given {
    fn values<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a String> {
        let of = move |(f, v): &'a (&Flag, String)| (f.long() == long).then_some(v);
        self.flags.iter().filter_map(of)
    }
    pub fn on(&self, long: &str) -> bool {
        self.values(long).next().is_some()
    }
    /// The last value given (a flag given twice: the second).
    pub fn text(&self, long: &str) -> Option<String> {
        self.values(long).last().cloned()
    }
    pub fn texts(&self, long: &str) -> Vec<String> {
        self.values(long).cloned().collect()
    }
    pub fn num(&self, long: &str) -> Option<u32> {
        let n = self.text(long).map(|v| v.parse());
        n.map(|n| n.expect("checked when read"))
    }
    /// Every name given, in order: a list flag given twice names both lists.
    pub fn names<T: Choice>(&self, long: &str) -> Vec<T> {
        let words = self.values(long).flat_map(|v| v.split(','));
        let index = |w| pick(T::WHAT, w, T::NAMES).expect("checked when read");
        words.map(|w| T::all()[index(w)]).collect()
    }
    /// `LABEL needs WHAT`.
    pub fn needs(&self, what: &str) -> UsageError {
        UsageError(format!("{} needs {what}", self.label))
    }
    /// `WHY (see 'cargo xtask COMMAND --help')`.
    pub fn see(&self, why: String) -> UsageError {
        let top = self.label.split(' ').next().unwrap_or_default();
        UsageError(format!("{why} (see 'cargo xtask {top} --help')"))
    }
}

/// Read `args` as the words of `cmd` (of its subcommand `sub`, when given): each flag's value
/// checked as it comes, a word starting with `-` (but not `-5`) an unknown flag, every word
/// after `--` positional, a flag of another subcommand refused, and positional words beyond
/// what the usage line shows unexpected. Flags that exclude each other fail after the scan.
pub(super) fn scan(args: Vec<String>, cmd: &Cmd, sub: Option<&Sub>) -> Result<Given, Error> {
    let label = sub.map_or(cmd.name.into(), |s| format!("{} {}", cmd.name, s.name));
    let mut g = Given {
        label,
        ..Given::default()
    };
    let usage = sub.map_or(cmd.args, |s| s.args);
    let (words, _) = usage.split_once(" | ").unwrap_or((usage, ""));
    let max = [words.split_whitespace().count(), usize::MAX][usize::from(usage.ends_with("..."))];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let number = arg.len() > 1 && arg.as_bytes()[1].is_ascii_digit();
        match cmd.flags.iter().find(|f| f.spelled(&arg)) {
            _ if arg == "--" => g.words.extend(args.by_ref()),
            None if arg.starts_with('-') && !number => {
                return Err(g.see(format!("unknown flag '{arg}' for '{}'", g.label)));
            }
            None => g.words.push(arg),
            Some(f) if sub.is_some_and(|s| !s.flags.contains(&f.long())) => {
                let why = format!("flag '{arg}' does not apply to '{}'", g.label);
                return Err(g.see(why + &cmd.applies(f.long())));
            }
            Some(f) => g.flags.push((f, f.read(&arg, &mut args)?)),
        }
        if let Some(extra) = g.words.get(max) {
            return Err(g.see(format!("unexpected argument '{extra}' for '{}'", g.label)));
        }
    }
    for (f, _) in &g.flags {
        if let Shape::Or(other) = f.shape {
            let both = format!("{} and {other} exclude each other", f.long());
            refuse(g.on(other), &both)?;
        }
    }
    Ok(g)
}
