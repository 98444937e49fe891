//! A static check of the store's Lua (tests only): every key a script touches is declared in
//! KEYS, as Redis Cluster and Dragonfly require.
//!
//! The rules, on the tokens of a script (comments dropped):
//!
//! - its first statement names its keys: `local a, b = KEYS[1], KEYS[2]`, and the names are
//!   the store's list for that script, in order;
//! - `KEYS` appears nowhere else (the migration, which takes a variable number of keys, may
//!   read `#KEYS` and assign `local old = KEYS[i]`);
//! - the key argument of every `redis.call` / `redis.pcall` (the first one; all of them for
//!   `DEL`) is a variable holding a declared key: a name of the header, an alias assigned from
//!   one (`local src = all`), or a field of a key table (`K.entries`), never an expression;
//! - no variable holding a key is concatenated (`..`), no variable holding a key is
//!   reassigned from anything else, and no string literal is a key fragment (`'e:'`,
//!   `palisade:`).
//!
//! Helpers (`lua/lib/`) follow the same rules with no header: their key parameters are named
//! after the keys (`kind_add(kinds, ...)`, `K.entries`).

use std::collections::BTreeSet;

/// A Lua token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

/// A token and its line (1-based).
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

const SYMBOLS: [&str; 26] = [
    "...", "..", ".", "==", "~=", "<=", ">=", "+", "-", "*", "/", "%", "^", "#", "<", ">", "=",
    "(", ")", "{", "}", "[", "]", ";", ":", ",",
];

/// The tokens of `src`, comments dropped. Long strings and long comments (`[[`) are refused:
/// the scripts do not use them and this lexer does not read them.
fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest = |n: usize| chars[i..].iter().take(n).collect::<String>();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if rest(2) == "--" {
            if rest(4) == "--[[" || rest(4) == "--[=" {
                return Err(format!("line {line}: long comments are not supported"));
            }
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest(2) == "[[" || rest(2) == "[=" {
            return Err(format!("line {line}: long strings are not supported"));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Num(chars[start..i].iter().collect()),
                line,
            });
        } else if c == '\'' || c == '"' {
            let start_line = line;
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None | Some('\n') => {
                        return Err(format!("line {start_line}: unterminated string"));
                    }
                    Some('\\') => {
                        if let Some(&e) = chars.get(i + 1) {
                            s.push(e);
                        }
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                line: start_line,
            });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| rest(s.len()) == **s) {
            i += sym.len();
            out.push(Token {
                tok: Tok::Sym(sym),
                line,
            });
        } else {
            return Err(format!("line {line}: unexpected character {c:?}"));
        }
    }
    Ok(out)
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_sym(t: Option<&Token>, sym: &str) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Sym(s)) if *s == sym)
}

/// The header `local a, b = KEYS[1], KEYS[2]`: its names, and where the rest begins.
fn header(toks: &[Token]) -> Result<(Vec<String>, usize), String> {
    let refuse =
        || "the first statement must name the keys: `local a, b = KEYS[1], KEYS[2]`".to_owned();
    if ident(toks.first()) != Some("local") {
        return Err(refuse());
    }
    let mut names = Vec::new();
    let mut i = 1;
    loop {
        let name = ident(toks.get(i)).ok_or_else(refuse)?;
        names.push(name.to_owned());
        i += 1;
        if is_sym(toks.get(i), "=") {
            i += 1;
            break;
        }
        if !is_sym(toks.get(i), ",") {
            return Err(refuse());
        }
        i += 1;
    }
    for n in 1..=names.len() {
        let index = match toks.get(i + 2).map(|t| &t.tok) {
            Some(Tok::Num(x)) => x.parse::<usize>().ok(),
            _ => None,
        };
        if ident(toks.get(i)) != Some("KEYS")
            || !is_sym(toks.get(i + 1), "[")
            || index != Some(n)
            || !is_sym(toks.get(i + 3), "]")
        {
            return Err(format!(
                "{}; value {n} is not KEYS[{n}]",
                refuse().trim_end_matches(':')
            ));
        }
        i += 4;
        if n < names.len() {
            if !is_sym(toks.get(i), ",") {
                return Err(refuse());
            }
            i += 1;
        }
    }
    if is_sym(toks.get(i), ",") {
        return Err(format!("{} (more values than names)", refuse()));
    }
    Ok((names, i))
}

/// The arguments of the call whose `(` is at `open`: token ranges split at top-level commas.
fn call_args(toks: &[Token], open: usize) -> Result<Vec<&[Token]>, String> {
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut start = open + 1;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Sym("(" | "{" | "[") => depth += 1,
            Tok::Sym(")" | "}" | "]") => {
                depth -= 1;
                if depth == 0 {
                    args.push(&toks[start..i]);
                    return Ok(args);
                }
            }
            Tok::Sym(",") if depth == 1 => {
                args.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    Err(format!("line {}: unclosed call", toks[open].line))
}

/// The rules of the module documentation on the tokens after the header; `vars` holds the
/// variables known to hold keys (and grows with aliases).
fn check_body(
    toks: &[Token],
    vars: &mut BTreeSet<String>,
    extra_keys: bool,
    key_names: &[&str],
) -> Result<(), String> {
    let keyish = |v: &str, vars: &BTreeSet<String>| vars.contains(v) || key_names.contains(&v);
    for (i, t) in toks.iter().enumerate() {
        let at = |j: usize| toks.get(j);
        let before = |n: usize| i.checked_sub(n).and_then(|j| toks.get(j));
        let line = t.line;
        match &t.tok {
            Tok::Ident(w) if w == "KEYS" => {
                let counted = is_sym(before(1), "#");
                let assigned = is_sym(before(1), "=") && ident(before(2)).is_some();
                if !(extra_keys && (counted || assigned)) {
                    return Err(format!(
                        "line {line}: KEYS is used outside the first statement"
                    ));
                }
                if let (true, Some(alias)) = (assigned, ident(before(2))) {
                    vars.insert(alias.to_owned());
                }
            }
            Tok::Ident(x) if is_sym(at(i + 1), "=") && !is_sym(before(1), ".") => {
                // `x = y`: an alias when y holds a key (and is the whole value).
                let value = ident(at(i + 2));
                let whole = !matches!(
                    at(i + 3).map(|t| &t.tok),
                    Some(Tok::Sym(".." | "." | "[" | "(" | ":"))
                );
                let from_key = value.is_some_and(|v| vars.contains(v)) && whole;
                if from_key {
                    vars.insert(x.clone());
                } else if vars.contains(x) && ident(at(i + 2)) != Some("KEYS") {
                    return Err(format!(
                        "line {line}: `{x}` holds a key and is reassigned from something else"
                    ));
                }
            }
            Tok::Sym("..") => {
                for side in [before(1), at(i + 1)] {
                    if let Some(v) = ident(side).filter(|v| keyish(v, vars) || *v == "KEYS") {
                        return Err(format!(
                            "line {line}: `{v}` is concatenated: a key name is built in the script"
                        ));
                    }
                }
                if is_sym(before(1), "]") {
                    // `KEYS[1] ..` (already refused above, but say it clearly).
                    let opened = toks[..i].iter().rposition(|t| t.tok == Tok::Sym("["));
                    if opened.is_some_and(|o| o > 0 && ident(toks.get(o - 1)) == Some("KEYS")) {
                        return Err(format!("line {line}: KEYS[...] is concatenated"));
                    }
                }
            }
            Tok::Str(s) if s == "e:" || s.ends_with(":e:") || s.contains("palisade") => {
                return Err(format!(
                    "line {line}: the string {s:?} looks like a piece of a key name"
                ));
            }
            Tok::Ident(r)
                if r == "redis"
                    && is_sym(at(i + 1), ".")
                    && matches!(ident(at(i + 2)), Some("call" | "pcall")) =>
            {
                if !is_sym(at(i + 3), "(") {
                    return Err(format!(
                        "line {line}: redis.call without a direct argument list"
                    ));
                }
                let args = call_args(toks, i + 3)?;
                let cmd = match args.first() {
                    Some(
                        [
                            Token {
                                tok: Tok::Str(c), ..
                            },
                        ],
                    ) => c.to_ascii_uppercase(),
                    _ => return Err(format!("line {line}: the command is not a string literal")),
                };
                let keyed: &[&[Token]] = match cmd.as_str() {
                    "TIME" => &[],
                    "DEL" | "UNLINK" | "EXISTS" => &args[1..],
                    _ => args
                        .get(1..2)
                        .ok_or_else(|| format!("line {line}: redis.call('{cmd}') without a key"))?,
                };
                for arg in keyed {
                    let ok = match arg {
                        [
                            Token {
                                tok: Tok::Ident(v), ..
                            },
                        ] => vars.contains(v),
                        [
                            Token {
                                tok: Tok::Ident(k), ..
                            },
                            Token {
                                tok: Tok::Sym("."), ..
                            },
                            Token {
                                tok: Tok::Ident(v), ..
                            },
                        ] => k == "K" && key_names.contains(&v.as_str()),
                        _ => false,
                    };
                    if !ok {
                        let shown: Vec<String> = arg.iter().map(|t| show(&t.tok)).collect();
                        return Err(format!(
                            "line {line}: redis.call('{cmd}', {}, ...): not a declared key",
                            shown.join(" ")
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Num(s) => s.clone(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Sym(s) => (*s).to_owned(),
    }
}

/// Checks script `body` (without its helpers): it names `keys` in its header and touches no
/// other key. `extra_keys`: the call adds keys after those (the migration).
pub(super) fn check_script(
    body: &str,
    keys: &[&str],
    extra_keys: bool,
    key_names: &[&str],
) -> Result<(), String> {
    let toks = tokens(body)?;
    let (names, after) = header(&toks)?;
    if names != keys {
        return Err(format!(
            "the script names its keys {names:?}, the store passes {keys:?}"
        ));
    }
    let mut vars: BTreeSet<String> = names.into_iter().collect();
    check_body(&toks[after..], &mut vars, extra_keys, key_names)
}

/// Checks a helper: no KEYS or ARGV (keys come as parameters named after them).
pub(super) fn check_helper(source: &str, key_names: &[&str]) -> Result<(), String> {
    let toks = tokens(source)?;
    if let Some(t) = toks
        .iter()
        .find(|t| matches!(&t.tok, Tok::Ident(w) if w == "KEYS" || w == "ARGV"))
    {
        return Err(format!(
            "line {}: a helper takes its keys and values as parameters, not KEYS/ARGV",
            t.line
        ));
    }
    let mut vars: BTreeSet<String> = key_names.iter().map(|&k| k.to_owned()).collect();
    check_body(&toks, &mut vars, false, key_names)
}

/// The highest `KEYS[n]` of a script (0 when it uses none), comments ignored.
pub(super) fn highest_key_index(body: &str) -> Result<usize, String> {
    let toks = tokens(body)?;
    let mut highest = 0;
    for w in toks.windows(4) {
        if let [
            Token {
                tok: Tok::Ident(k), ..
            },
            Token {
                tok: Tok::Sym("["), ..
            },
            Token {
                tok: Tok::Num(n), ..
            },
            Token {
                tok: Tok::Sym("]"), ..
            },
        ] = w
        {
            if k == "KEYS" {
                let n: usize = n.parse().map_err(|_| format!("KEYS[{n}]"))?;
                highest = highest.max(n);
            }
        }
    }
    Ok(highest)
}

/// The helpers of `all` that `src` refers to (a function defined in `src` does not count).
fn refers_to<'a>(src: &str, all: &[(&'a str, &str)]) -> Result<BTreeSet<&'a str>, String> {
    let toks = tokens(src)?;
    let mut used = BTreeSet::new();
    for (i, t) in toks.iter().enumerate() {
        let before = i.checked_sub(1).and_then(|j| toks.get(j));
        if let Tok::Ident(w) = &t.tok {
            if ident(before) == Some("function") || is_sym(before, ".") || is_sym(before, ":") {
                continue;
            }
            if let Some(&(name, _)) = all.iter().find(|(name, _)| name == w) {
                used.insert(name);
            }
        }
    }
    Ok(used)
}

/// Checks that `given` (the helpers put in front of `body`, in order) are exactly the helpers
/// the script calls, directly or through another helper, each after the helpers it calls.
pub(super) fn check_helpers(
    body: &str,
    given: &[&str],
    all: &[(&str, &str)],
) -> Result<(), String> {
    let source = |name: &str| all.iter().find(|(n, _)| *n == name).map(|&(_, s)| s);
    let mut needed = refers_to(body, all)?;
    let mut todo: Vec<&str> = needed.iter().copied().collect();
    while let Some(h) = todo.pop() {
        let src = source(h).ok_or_else(|| format!("unknown helper {h}"))?;
        for d in refers_to(src, all)? {
            if needed.insert(d) {
                todo.push(d);
            }
        }
    }
    let given_set: BTreeSet<&str> = given.iter().copied().collect();
    if given_set.len() != given.len() {
        return Err(format!("a helper is listed twice: {given:?}"));
    }
    if given_set != needed {
        return Err(format!("needs the helpers {needed:?}, is given {given:?}"));
    }
    for (p, h) in given.iter().enumerate() {
        let src = source(h).ok_or_else(|| format!("unknown helper {h}"))?;
        for d in refers_to(src, all)? {
            if !given[..p].contains(&d) {
                return Err(format!("helper {h} needs {d} in front of it: {given:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["entries", "due", "leases", "kinds"];

    fn check(body: &str, keys: &[&str]) -> Result<(), String> {
        check_script(body, keys, false, &NAMES)
    }

    #[test]
    fn accepts_declared_keys_aliases_and_key_tables() {
        let body = "-- KEYS: due, entries\n\
            local due, entries = KEYS[1], KEYS[2]\n\
            local src = due\n\
            local K = {entries = entries, due = due}\n\
            local m = ARGV[1] .. ':x'\n\
            redis.call('ZADD', src, 1, m)\n\
            redis.call('HSET', K.entries, m, '{\"kind\":' .. m)\n\
            redis.call('DEL', due, entries)\n\
            local t = redis.call('TIME')\n";
        check(body, &["due", "entries"]).unwrap();
        assert_eq!(highest_key_index(body).unwrap(), 2);
    }

    #[test]
    fn refuses_keys_built_or_undeclared() {
        let cases = [
            (
                "local due = KEYS[1]\nlocal k = KEYS[1] .. 'x'\n",
                "KEYS is used outside",
            ),
            (
                "local due = KEYS[1]\nredis.call('GET', KEYS[1] .. 'e:' .. ARGV[1])\n",
                "not a declared key",
            ),
            (
                "local due = KEYS[1]\nlocal k = due .. 'x'\n",
                "`due` is concatenated",
            ),
            (
                "local due = KEYS[1]\nredis.call('GET', 'x:' .. ARGV[1])\n",
                "not a declared key",
            ),
            (
                "local due = KEYS[1]\nlocal p = 'e:'\n",
                "piece of a key name",
            ),
            (
                "local due = KEYS[1]\nredis.call('DEL', due, ARGV[1])\n",
                "not a declared key",
            ),
            (
                "local due = KEYS[1]\ndue = ARGV[1]\nredis.call('GET', due)\n",
                "reassigned",
            ),
            ("local due, entries = KEYS[1], KEYS[3]\n", "not KEYS[2]"),
            ("local x = 1\n", "first statement"),
        ];
        for (body, want) in cases {
            let keys: &[&str] = if body.contains("entries") {
                &["due", "entries"]
            } else {
                &["due"]
            };
            match check(body, keys) {
                Err(e) => assert!(e.contains(want), "{body}: {e}"),
                Ok(()) => panic!("accepted: {body}"),
            }
        }
        // The names must be the store's list, in order.
        let e = check(
            "local entries, due = KEYS[1], KEYS[2]\n",
            &["due", "entries"],
        );
        assert!(e.unwrap_err().contains("store passes"));
        // Only a script with extra keys may read KEYS past its header.
        let variadic = concat!(
            "local entries = KEYS[1]\n",
            "for i = 2, #KEYS do\n",
            "  local old = KEYS[i]\n",
            "  redis.call('GET', old)\n",
            "end\n",
        );
        check_script(variadic, &["entries"], true, &NAMES).unwrap();
        assert!(check(variadic, &["entries"]).is_err());
    }

    #[test]
    fn helpers_are_checked_for_their_keys_and_their_order() {
        let kind_add =
            "local function kind_add(kinds, k, d)\n  redis.call('HINCRBY', kinds, k, d)\nend\n";
        let remove = concat!(
            "local function remove_many(K, ms)\n",
            "  redis.call('HDEL', K.entries, unpack(ms))\n",
            "  kind_add(K.kinds, 'x', -1)\n",
            "end\n",
        );
        check_helper(kind_add, &NAMES).unwrap();
        check_helper(remove, &NAMES).unwrap();
        assert!(check_helper("local function f() return KEYS[1] end\n", &NAMES).is_err());
        assert!(check_helper("local function f(m) redis.call('GET', m) end\n", &NAMES).is_err());
        let all = [("kind_add", kind_add), ("remove_many", remove)];
        let body = "local entries = KEYS[1]\nremove_many({}, {})\n";
        check_helpers(body, &["kind_add", "remove_many"], &all).unwrap();
        assert!(check_helpers(body, &["remove_many", "kind_add"], &all).is_err());
        assert!(check_helpers(body, &["remove_many"], &all).is_err());
        assert!(check_helpers("local x = 1\n", &["kind_add"], &all).is_err());
    }
}
