//! The shape of a command's table, and what is derived from it: the reading of its flags (each
//! value checked as it comes), its usage lines and the rows of its help.

use super::{Command, UsageError};

/// A closed list of names (made by `choice!`): what an error calls one, the names in order,
/// and each one's help line (empty where the help does not list them).
pub trait Choice: Copy + 'static {
    const WHAT: &'static str;
    const NAMES: &'static [&'static str];
    const ROWS: &'static [(&'static str, &'static str)];
    fn all() -> &'static [Self];
}

/// A name from a list: its index in `names`, or the error naming the valid choices.
pub(super) fn pick(what: &str, got: &str, names: &[&str]) -> Result<usize, UsageError> {
    let index = names.iter().position(|n| *n == got);
    index.ok_or_else(|| UsageError::choice(what, got, names))
}

/// A number in a range, or `invalid WHAT 'GOT': HINT` (`{min}` and `{max}` in the hint are the
/// bounds).
pub(super) fn number(
    what: &str,
    got: &str,
    range: (u32, u32),
    hint: &str,
) -> Result<u32, UsageError> {
    let (min, max) = range;
    let hint = || {
        hint.replace("{min}", &min.to_string())
            .replace("{max}", &max.to_string())
    };
    let n = got.parse().ok().filter(|n| (min..=max).contains(n));
    n.ok_or_else(|| UsageError::new(format!("invalid {what} '{got}': {}", hint())))
}

/// What a flag takes after it, and what the help calls that (META).
#[derive(Clone, Copy)]
pub(super) enum Value {
    Switch,
    /// A number in a range; the hint ends the error (see [`number`]).
    Num(&'static str, (u32, u32), &'static str),
    /// A name of a [`Choice`] (shown `a|b`), or with a META several, comma separated.
    Pick(&'static str, &'static [&'static str], Option<&'static str>),
    /// A path or free text, checked when there is a check.
    Text(&'static str, Option<Check>),
}

/// A check of a text value (`--since`, `--hosts`).
pub(super) type Check = fn(&str) -> Result<(), UsageError>;

/// How a flag shows in a usage line.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Shape {
    /// `[--flag META]`
    Word,
    /// `[--flag META]...`: repeatable.
    Many,
    /// A mode of its own: a usage line of its own.
    Alone,
    /// `[--flag META | --other]`: given together, they are an error.
    Or(&'static str),
}

/// One flag: its spellings, what it takes, its line under Options ("": none, the help says it
/// elsewhere), its shape in the usage line.
#[derive(Clone, Copy)]
pub(super) struct Flag {
    pub long: &'static str,
    pub short: Option<&'static str>,
    pub value: Value,
    pub doc: &'static str,
    pub shape: Shape,
}

impl Flag {
    const fn new(long: &'static str, value: Value, doc: &'static str) -> Flag {
        let (short, shape) = (None, Shape::Word);
        Flag {
            long,
            short,
            value,
            doc,
            shape,
        }
    }
    pub const fn switch(long: &'static str, doc: &'static str) -> Flag {
        Flag::new(long, Value::Switch, doc)
    }
    /// From `min` to `max`; the error says `use MIN-MAX` unless [`Flag::hint`] says otherwise.
    pub const fn num(
        long: &'static str,
        meta: &'static str,
        min: u32,
        max: u32,
        doc: &'static str,
    ) -> Flag {
        Flag::new(long, Value::Num(meta, (min, max), "use {min}-{max}"), doc)
    }
    pub const fn text(long: &'static str, meta: &'static str, doc: &'static str) -> Flag {
        Flag::new(long, Value::Text(meta, None), doc)
    }
    /// One name of `T`.
    pub const fn pick<T: Choice>(long: &'static str, doc: &'static str) -> Flag {
        Flag::new(long, Value::Pick(T::WHAT, T::NAMES, None), doc)
    }
    /// Names of `T`, comma separated: `META[,META...]` in the usage, `METAS` under Options.
    pub const fn list<T: Choice>(
        long: &'static str,
        meta: &'static str,
        doc: &'static str,
    ) -> Flag {
        Flag::new(long, Value::Pick(T::WHAT, T::NAMES, Some(meta)), doc)
    }
    pub const fn short(mut self, short: &'static str) -> Flag {
        self.short = Some(short);
        self
    }
    pub const fn shape(mut self, shape: Shape) -> Flag {
        self.shape = shape;
        self
    }
    pub const fn hint(mut self, text: &'static str) -> Flag {
        if let Value::Num(_, _, hint) = &mut self.value {
            *hint = text;
        }
        self
    }
    pub const fn check(mut self, f: Check) -> Flag {
        if let Value::Text(_, check) = &mut self.value {
            *check = Some(f);
        }
        self
    }

    pub fn spelled(&self, arg: &str) -> bool {
        self.long == arg || self.short == Some(arg)
    }
    pub fn takes_value(&self) -> bool {
        !matches!(self.value, Value::Switch)
    }
    /// What follows it in the help: ` META` in a usage line (`usage`) or under Options.
    fn meta(&self, usage: bool) -> String {
        match self.value {
            Value::Switch => String::new(),
            Value::Num(meta, ..) | Value::Text(meta, _) => format!(" {meta}"),
            Value::Pick(_, names, None) => format!(" {}", names.join("|")),
            Value::Pick(.., Some(m)) if usage => format!(" {m}[,{m}...]"),
            Value::Pick(.., Some(m)) => format!(" {m}S"),
        }
    }
    /// `-n N`: in a usage line, by its short spelling where it has one.
    pub fn usage(&self) -> String {
        format!("{}{}", self.short.unwrap_or(self.long), self.meta(true))
    }
    /// Read its value after `spelled` (when it takes one), checked.
    fn read(&self, spelled: &str, args: &mut Args) -> Result<Got, UsageError> {
        let value = |args: &mut Args| match args.next() {
            Some(v) if !v.starts_with("--") => Ok(v),
            _ => Err(UsageError::new(format!("{spelled} needs a value"))),
        };
        Ok(match self.value {
            Value::Switch => Got::Yes,
            Value::Num(_, range, hint) => Got::Num(number(spelled, &value(args)?, range, hint)?),
            Value::Pick(what, names, list) => {
                let v = value(args)?;
                let mut words = vec![v.as_str()];
                if list.is_some() {
                    words = v.split(',').collect();
                }
                let picks = words.into_iter().map(|w| pick(what, w, names));
                Got::Names(picks.collect::<Result<_, _>>()?)
            }
            Value::Text(_, check) => {
                let v = value(args)?;
                check.map_or(Ok(()), |check| check(&v))?;
                Got::Text(v)
            }
        })
    }
}

/// A subcommand: its name, its positional words as the usage shows them, the long names of
/// the command's flags that apply to it (in usage order) and its help line. Without a help
/// line it is hidden: parsed, but neither in the help nor among the choices an error names.
pub(super) struct Sub {
    pub name: &'static str,
    pub args: &'static str,
    pub flags: &'static [&'static str],
    pub doc: &'static str,
}

pub(super) const fn sub(
    name: &'static str,
    args: &'static str,
    flags: &'static [&'static str],
    doc: &'static str,
) -> Sub {
    Sub {
        name,
        args,
        flags,
        doc,
    }
}

/// A part of a help text after the usage lines (each follows a blank line).
pub(super) enum Section {
    /// Prose, as written.
    Text(&'static str),
    /// A heading ("": none), then rows of a term and its doc, the docs at a column.
    Rows(&'static str, usize, &'static [Rows]),
}

pub(super) enum Rows {
    /// Written out: a [`Choice`]'s `ROWS`, or terms of their own.
    Pairs(&'static [(&'static str, &'static str)]),
    /// The command's flags that have a doc, then `-h, --help` when true.
    Flags(bool),
    /// The visible subcommands: with their words and flags when true, else by name.
    Subs(bool),
}

/// Options, then `-h, --help`.
pub(super) const OPTIONS: &[Rows] = &[Rows::Flags(true)];

/// One command: the table the parser reads and the help is rendered from.
pub(super) struct Cmd {
    pub name: &'static str,
    /// Its line in `cargo xtask --help`, and the first line of its own help.
    pub about: &'static str,
    pub title: &'static str,
    /// Positional words in its usage line (`[OPTIONS]`: the flags are not listed there).
    pub args: &'static str,
    pub flags: &'static [Flag],
    pub subs: &'static [Sub],
    /// The subcommand when none is named (then each has a usage line of its own).
    pub default: Option<&'static str>,
    pub help: &'static [Section],
    pub parse: fn(&mut Args) -> Result<Command, UsageError>,
}

/// Usage lines wrap before this column.
const USAGE_WIDTH: usize = 110;

impl Cmd {
    pub fn flag(&self, long: &str) -> &'static Flag {
        let flags: &'static [Flag] = self.flags;
        flags
            .iter()
            .find(|f| f.long == long)
            .expect("a flag of the table")
    }
    pub fn visible(&self) -> impl Iterator<Item = &'static Sub> {
        let subs: &'static [Sub] = self.subs;
        subs.iter().filter(|s| !s.doc.is_empty())
    }
    /// The subcommand named `word` (hidden ones too), or the error naming the visible ones.
    pub fn sub(&self, what: &str, word: &str) -> Result<&'static Sub, UsageError> {
        let subs: &'static [Sub] = self.subs;
        let names: Vec<&str> = self.visible().map(|s| s.name).collect();
        let sub = subs.iter().find(|s| s.name == word);
        sub.ok_or_else(|| UsageError::choice(what, word, &names))
    }
    /// The usage words of these flags: `[--x]`, `[--a N | --b]`, `[--f X]...`.
    fn words(&self, longs: &[&str]) -> Vec<String> {
        let flags = longs.iter().map(|l| self.flag(l));
        let shown = flags.filter(|f| {
            !longs
                .iter()
                .any(|o| self.flag(o).shape == Shape::Or(f.long))
        });
        let word = |f: &Flag| match f.shape {
            Shape::Many => format!("[{}]...", f.usage()),
            Shape::Or(other) => format!("[{} | {}]", f.usage(), self.flag(other).usage()),
            _ => format!("[{}]", f.usage()),
        };
        shown.map(word).collect()
    }
    /// `cargo xtask NAME WORDS…`, wrapped under its first word.
    fn line(&self, words: &[String]) -> String {
        let mut line = format!("cargo xtask {}", self.name);
        let indent = " ".repeat("Usage: ".len() + line.len() + 1);
        let mut col = "Usage: ".len() + line.len();
        for w in words.iter().filter(|w| !w.is_empty()) {
            let wrap = col + 1 + w.len() > USAGE_WIDTH;
            line += if wrap { "\n" } else { " " };
            line += if wrap { &indent } else { "" };
            col = if wrap { indent.len() } else { col + 1 } + w.len();
            line += w;
        }
        line
    }
    fn usage_lines(&self) -> Vec<String> {
        let visible: Vec<&Sub> = self.visible().collect();
        if let Some(default) = self.default {
            // Those taking the same flags as the default share its line: [a|b|c].
            let first = visible
                .iter()
                .find(|s| s.name == default)
                .expect("a subcommand");
            let (same, others): (Vec<&Sub>, _) =
                visible.iter().partition(|s| s.flags == first.flags);
            let same: Vec<&str> = same.iter().map(|s| s.name).collect();
            let heads = std::iter::once(format!("[{}]", same.join("|")));
            let heads = heads.chain(others.iter().map(|s| s.name.to_string()));
            let subs = std::iter::once(*first).chain(others.iter().copied());
            let line = |(head, s): (String, &Sub)| {
                self.line(&[vec![head, s.args.into()], self.words(s.flags)].concat())
            };
            return heads.zip(subs).map(line).collect();
        }
        if !self.subs.is_empty() {
            let names: Vec<&str> = visible.iter().map(|s| s.name).collect();
            return vec![self.line(&[format!("<{}>", names.join("|")), "[ARGS]".into()])];
        }
        let (alone, longs): (Vec<&Flag>, Vec<&Flag>) =
            self.flags.iter().partition(|f| f.shape == Shape::Alone);
        let longs: Vec<&str> = longs.iter().map(|f| f.long).collect();
        let mut words = vec![self.args.to_string()];
        if self.args != "[OPTIONS]" {
            words.extend(self.words(&longs));
        }
        let alone = alone.into_iter().map(|f| self.line(&[f.usage()]));
        std::iter::once(self.line(&words)).chain(alone).collect()
    }
    fn rows(&self, rows: &Rows) -> Vec<(String, &'static str)> {
        let flags: &'static [Flag] = self.flags;
        match rows {
            Rows::Pairs(pairs) => pairs.iter().map(|(t, d)| (t.to_string(), *d)).collect(),
            Rows::Flags(help) => {
                let documented = flags.iter().filter(|f| !f.doc.is_empty());
                let short = |f: &Flag| f.short.map(|s| format!("{s}, ")).unwrap_or_default();
                let term = |f: &Flag| format!("{}{}{}", short(f), f.long, f.meta(false));
                let help = help.then(|| ("-h, --help".to_string(), "print this help"));
                documented.map(|f| (term(f), f.doc)).chain(help).collect()
            }
            Rows::Subs(full) => self
                .visible()
                .map(|s| match (full, self.default == Some(s.name)) {
                    (true, _) => {
                        let words =
                            [vec![s.name.into(), s.args.into()], self.words(s.flags)].concat();
                        let words: Vec<String> =
                            words.into_iter().filter(|w| !w.is_empty()).collect();
                        (words.join(" "), s.doc)
                    }
                    (false, true) => (format!("{} (default)", s.name), s.doc),
                    (false, false) => (s.name.to_string(), s.doc),
                })
                .collect(),
        }
    }
    /// `cargo xtask NAME --help`.
    pub fn help(&self) -> String {
        let mut out = format!("cargo xtask {}: {}\n\n", self.name, self.title);
        for (i, line) in self.usage_lines().iter().enumerate() {
            out += if i == 0 { "Usage: " } else { "       " };
            out += &format!("{line}\n");
        }
        for section in self.help {
            match section {
                Section::Text(text) => out += &format!("\n{text}\n"),
                Section::Rows(head, width, rows) => {
                    let rows: Vec<_> = rows.iter().flat_map(|r| self.rows(r)).collect();
                    out += "\n";
                    render_rows(&mut out, head, *width, &rows);
                }
            }
        }
        out
    }
}

/// A heading, then `  TERM  DOC` with the docs at column `2 + width` (a longer term gets a
/// line of its own); a doc's further lines are indented to the same column.
pub(super) fn render_rows(out: &mut String, head: &str, width: usize, rows: &[(String, &str)]) {
    if !head.is_empty() {
        *out += &format!("{head}\n");
    }
    let indent = " ".repeat(2 + width);
    for (term, doc) in rows {
        match term.len() >= width {
            true => *out += &format!("  {term}\n{indent}"),
            false => *out += &format!("  {term:<width$}"),
        }
        *out += &format!("{}\n", doc.replace('\n', &format!("\n{indent}")));
    }
}

/// A cursor over the arguments after the command name.
pub(super) struct Args {
    pub items: Vec<String>,
    pub pos: usize,
}

impl Args {
    pub fn next(&mut self) -> Option<String> {
        let item = self.items.get(self.pos).cloned();
        self.pos += usize::from(item.is_some());
        item
    }
    pub fn rest(&mut self) -> Vec<String> {
        let rest = self.items[self.pos..].to_vec();
        self.pos = self.items.len();
        rest
    }
    /// `-h` or `--help` anywhere before `--` wins over everything else.
    pub fn wants_help(&self) -> bool {
        let flags = self.items[self.pos..].iter().take_while(|a| *a != "--");
        flags.into_iter().any(|a| a == "-h" || a == "--help")
    }
}

/// A word that is not the command's: `unknown flag` or `unexpected argument`, naming its help.
pub(super) fn unexpected(cmd: &str, arg: &str) -> UsageError {
    let top = cmd.split(' ').next().unwrap_or(cmd);
    let what = ["unexpected argument", "unknown flag"][usize::from(arg.starts_with('-'))];
    UsageError::new(format!(
        "{what} '{arg}' for '{cmd}' (see 'cargo xtask {top} --help')"
    ))
}

/// A flag's value, checked.
pub(super) enum Got {
    Yes,
    Num(u32),
    /// Indices into the flag's names.
    Names(Vec<usize>),
    Text(String),
}

/// The flags given, in order, each with its spelling and value.
pub(super) struct Given(pub Vec<(&'static Flag, String, Got)>);

impl Given {
    fn all<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a Got> {
        self.0
            .iter()
            .filter(move |g| g.0.long == long)
            .map(|g| &g.2)
    }
    pub fn on(&self, long: &str) -> bool {
        self.all(long).next().is_some()
    }
    /// The last number given.
    pub fn num(&self, long: &str) -> Option<u32> {
        let num = |g: &Got| if let Got::Num(n) = g { Some(*n) } else { None };
        self.all(long).filter_map(num).last()
    }
    /// The last text given.
    pub fn text(&self, long: &str) -> Option<String> {
        self.texts(long).pop()
    }
    pub fn texts(&self, long: &str) -> Vec<String> {
        let text = |g: &Got| {
            if let Got::Text(t) = g {
                Some(t.clone())
            } else {
                None
            }
        };
        self.all(long).filter_map(text).collect()
    }
    /// Each time the flag was given, the names of `T` it named.
    pub fn names<T: Choice>(&self, long: &str) -> Vec<Vec<T>> {
        let of = |g: &Got| match g {
            Got::Names(ix) => Some(ix.iter().map(|i| T::all()[*i]).collect()),
            _ => None,
        };
        self.all(long).filter_map(of).collect()
    }
    /// The last name given.
    pub fn pick<T: Choice>(&self, long: &str) -> Option<T> {
        self.names::<T>(long).pop().and_then(|n| n.last().copied())
    }
}

/// Read the flags of `cmd` (of `sub` only, when given) to the end, checking each value as it
/// comes, and hand every other word to `word`, in order. A word starting with `-` is an unknown
/// flag, unless it comes after `--` (when the command takes `--` as the end of its flags).
/// `label` names the command in errors. Flags that exclude each other fail after the scan.
pub(super) fn scan(
    args: &mut Args,
    label: &str,
    cmd: &Cmd,
    sub: Option<&Sub>,
    dashdash: bool,
    mut word: impl FnMut(String) -> Result<(), UsageError>,
) -> Result<Given, UsageError> {
    let (mut given, mut words_only) = (Vec::new(), false);
    let flags: &'static [Flag] = cmd.flags;
    let applies = |f: &&Flag| sub.is_none_or(|s| s.flags.contains(&f.long));
    while let Some(arg) = args.next() {
        match flags.iter().find(|f| f.spelled(&arg)).filter(applies) {
            _ if words_only => word(arg)?,
            _ if dashdash && arg == "--" => words_only = true,
            Some(flag) => {
                let got = flag.read(&arg, args)?;
                given.push((flag, arg, got));
            }
            None if arg.starts_with('-') => return Err(unexpected(label, &arg)),
            None => word(arg)?,
        }
    }
    for (flag, ..) in &given {
        if let Shape::Or(other) = flag.shape {
            if given.iter().any(|(f, ..)| f.long == other) {
                let both = format!("{} and {other} exclude each other", flag.long);
                return Err(UsageError::new(both));
            }
        }
    }
    Ok(Given(given))
}

/// For commands without positional words: each is unexpected.
pub(super) fn no_words(label: &str) -> impl FnMut(String) -> Result<(), UsageError> + '_ {
    move |w| Err(unexpected(label, &w))
}
