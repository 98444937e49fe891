//! What the operator sees: aligned tables, colour on a terminal only, times as "12 s ago",
//! and with `--json` the server's JSON instead.
//!
//! Everything goes through [`Output`], which writes to stdout and turns a closed pipe
//! (`palisade events | head`) into a quiet stop instead of a panic, so `print!` is not used.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::CliError;

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always (even into a pipe).
    Always,
    /// Never.
    Never,
}

/// How a piece of text is shown on a colour terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As is.
    Plain,
    /// Green: closed, healthy, applied.
    Good,
    /// Yellow: half open, degraded, warn.
    Warn,
    /// Red: open, unhealthy, refused.
    Bad,
    /// Dim: headers' companions, "-".
    Dim,
    /// Bold: headings.
    Bold,
}

impl Style {
    fn code(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Good => Some("32"),
            Style::Warn => Some("33"),
            Style::Bad => Some("31"),
            Style::Dim => Some("2"),
            Style::Bold => Some("1"),
        }
    }
}

/// The style of a state or status word, whatever the component: `closed`, `healthy`, `ok`,
/// `applied` are good; `open`, `forced_open`, `unhealthy`, `critical`, `refused` bad; the
/// in-between states a warning.
pub fn state_style(word: &str) -> Style {
    match word {
        "closed" | "healthy" | "ok" | "applied" | "on" | "yes" | "pass" => Style::Good,
        "half_open" | "degraded" | "warn" | "metrics_only" | "disabled" | "no_answer"
        | "unknown" | "not checked" => Style::Warn,
        "open" | "forced_open" | "unhealthy" | "critical" | "refused" | "fail" | "crash loop" => {
            Style::Bad
        }
        _ => Style::Plain,
    }
}

/// Where output goes and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    color: bool,
}

impl Output {
    /// `json`: print the server's JSON; `choice`: colour (never with `json`).
    pub fn new(json: bool, choice: ColorChoice) -> Self {
        let color = !json
            && match choice {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    io::stdout().is_terminal()
                        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                }
            };
        Output { json, color }
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// `text` in `style` (unchanged without colour).
    pub fn paint(&self, text: &str, style: Style) -> String {
        match (self.color, style.code()) {
            (true, Some(code)) => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_owned(),
        }
    }

    /// Writes `text` and a newline to stdout.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    /// Writes `value` as pretty JSON.
    pub fn print_json(&self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        self.line(&text)
    }

    /// Writes `value` as one line of JSON (for streams: one event a line).
    pub fn print_json_line(&self, value: &Value) -> Result<(), CliError> {
        self.line(&value.to_string())
    }

    /// A heading line.
    pub fn heading(&self, text: &str) -> Result<(), CliError> {
        self.line(&self.paint(text, Style::Bold))
    }

    /// Writes `table`, its columns aligned, or `empty` when it has no rows.
    pub fn table(&self, table: &Table, empty: &str) -> Result<(), CliError> {
        if table.rows.is_empty() {
            return self.line(&self.paint(empty, Style::Dim));
        }
        self.line(table.render(self).trim_end_matches('\n'))
    }

    /// Writes `table` with every line behind `indent` (a table under a heading).
    pub fn table_indented(&self, table: &Table, indent: &str) -> Result<(), CliError> {
        let text: String = table
            .render(self)
            .lines()
            .map(|l| format!("{indent}{l}\n"))
            .collect();
        self.line(text.trim_end_matches('\n'))
    }

    /// Writes `label: value` lines with the labels aligned.
    pub fn fields(&self, fields: &[(String, Cell)]) -> Result<(), CliError> {
        let width = fields
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for (label, cell) in fields {
            let pad = width - label.chars().count();
            let _ = writeln!(
                text,
                "{}{} {}",
                self.paint(&format!("{label}:"), Style::Dim),
                " ".repeat(pad),
                self.paint(&cell.text, cell.style)
            );
        }
        self.line(text.trim_end_matches('\n'))
    }
}

/// Writes `text` to stderr (notes and errors: never mixed into the output scripts read).
/// Failures are ignored: there is nowhere else to report them.
pub fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// One table cell: its text and style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The text (without escape codes: widths are counted on it).
    pub text: String,
    /// How it is shown on a colour terminal.
    pub style: Style,
}

impl Cell {
    /// A cell in `style`.
    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell {
            text: text.into(),
            style,
        }
    }

    /// A state word, styled by [`state_style`].
    pub fn state(word: impl Into<String>) -> Self {
        let text = word.into();
        let style = state_style(&text);
        Cell { text, style }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        let style = if text == "-" {
            Style::Dim
        } else {
            Style::Plain
        };
        Cell { text, style }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_owned())
    }
}

/// Rows under a header, printed with aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells ignored).
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &Output) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(columns).enumerate() {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<Cell> = self
            .header
            .iter()
            .map(|h| Cell::styled(h.clone(), Style::Dim))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let blank = Cell::from("");
                let cell = row.get(i).unwrap_or(&blank);
                let last = i + 1 == columns;
                line.push_str(&out.paint(&cell.text, cell.style));
                if !last {
                    let pad = width - cell.text.chars().count();
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A length of time for people: `250 ms`, `7.9 s`, `12 s`, `5 min`, `3 h`, `2 d`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..120_000 => format!("{} s", ms / 1000),
        // Rounded to the nearest unit: 4 min 59.9 s left reads "5 min".
        120_000..7_200_000 => format!("{} min", (ms + 30_000) / 60_000),
        7_200_000..172_800_000 => format!("{} h", (ms + 1_800_000) / 3_600_000),
        _ => format!("{} d", ms.saturating_add(43_200_000) / 86_400_000),
    }
}

/// A moment relative to `now_ms`, both in ms since the Unix epoch: `12 s ago`, `in 5 min`,
/// `just now`.
pub fn ago(at_ms: u64, now_ms: u64) -> String {
    if at_ms <= now_ms {
        let d = now_ms - at_ms;
        if d < 1_000 {
            "just now".to_owned()
        } else {
            format!("{} ago", whole(d))
        }
    } else {
        format!("in {}", whole(at_ms - now_ms))
    }
}

/// Like [`duration_ms`] but in whole units (`12 s`, not `7.9 s`), for "ago".
fn whole(ms: u64) -> String {
    if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else {
        duration_ms(ms)
    }
}

/// A JSON value as a cell's text: strings without quotes, `null` as `-`, numbers and booleans
/// as they are, objects and arrays as compact JSON.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(other) => other.to_string(),
    }
}

/// The value at JSON pointer `ptr` of `v` as text ([`text`]).
pub fn at(v: &Value, ptr: &str) -> String {
    text(v.pointer(ptr))
}

/// The number at JSON pointer `ptr` of `v`, if it is one.
pub fn num(v: &Value, ptr: &str) -> Option<u64> {
    v.pointer(ptr).and_then(Value::as_u64)
}

/// `ms` (at `ptr` of `v`) as a duration, or `-`.
pub fn duration_at(v: &Value, ptr: &str) -> String {
    num(v, ptr).map_or_else(|| "-".to_owned(), duration_ms)
}

/// The moment at `ptr` of `v` (ms since the Unix epoch) relative to now, or `-`.
pub fn ago_at(v: &Value, ptr: &str, now: u64) -> String {
    num(v, ptr).map_or_else(|| "-".to_owned(), |ms| ago(ms, now))
}

/// The items of the array at `ptr` of `v` (none when absent).
pub fn items<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every leaf of `v` as `(dotted.path, text)`, in the document's order: a snapshot shown as
/// fields. Arrays of scalars stay on one line; empty objects show as `{}`.
pub fn flatten(v: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, child, out);
                }
            }
            Value::Array(list) if list.iter().any(|x| x.is_object()) => {
                for (i, child) in list.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), child, out);
                }
            }
            other => out.push((prefix.to_owned(), text(Some(other)))),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// `key=value` pairs of an object (`by_state`), sorted as the server sent them: `parked=3
/// scheduled=1`, or `-` when empty.
pub fn counts(v: Option<&Value>) -> String {
    let Some(map) = v.and_then(Value::as_object) else {
        return "-".to_owned();
    };
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={}", text(Some(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_read_like_a_person_says_them() {
        assert_eq!(ago(1_000, 13_400), "12 s ago");
        assert_eq!(ago(13_000, 13_400), "just now");
        assert_eq!(ago(0, 5 * 60_000), "5 min ago");
        assert_eq!(ago(0, 3 * 3_600_000), "3 h ago");
        assert_eq!(ago(20_000, 12_000), "in 8 s");
        assert_eq!(duration_ms(250), "250 ms");
        assert_eq!(duration_ms(7_930), "7.9 s");
        assert_eq!(duration_ms(60_000), "60 s");
        assert_eq!(duration_ms(300_000), "5 min");
        assert_eq!(duration_ms(299_900), "5 min");
        assert_eq!(
            duration_ms(u64::MAX),
            format!("{} d", u64::MAX / 86_400_000)
        );
        assert_eq!(duration_ms(3 * 86_400_000), "3 d");
    }

    #[test]
    fn tables_align_on_the_text_not_the_colour() {
        let mut t = Table::new(["NAME", "STATE", "NOTE"]);
        t.row(vec!["weather".into(), Cell::state("open"), "-".into()]);
        t.row(vec!["a".into(), Cell::state("closed")]);
        let plain = t.render(&Output::new(false, ColorChoice::Never));
        assert_eq!(
            plain,
            "NAME     STATE   NOTE\nweather  open    -\na        closed\n"
        );
        let coloured = t.render(&Output::new(false, ColorChoice::Always));
        assert!(
            coloured.contains("weather  \x1b[31mopen\x1b[0m    \x1b[2m-\x1b[0m\n"),
            "{coloured:?}"
        );
    }

    #[test]
    fn json_values_become_cell_text() {
        let v = json!({"a": {"b": null, "c": "x", "d": [1, 2], "e": true}, "f": [{"g": 1}]});
        assert_eq!(at(&v, "/a/b"), "-");
        assert_eq!(at(&v, "/a/c"), "x");
        assert_eq!(at(&v, "/missing"), "-");
        assert_eq!(
            flatten(&v),
            vec![
                ("a.b".into(), "-".into()),
                ("a.c".into(), "x".into()),
                ("a.d".into(), "[1,2]".into()),
                ("a.e".into(), "yes".into()),
                ("f[0].g".into(), "1".into()),
            ]
        );
        assert_eq!(
            counts(Some(&json!({"parked": 3, "scheduled": 1}))),
            "parked=3 scheduled=1"
        );
        assert_eq!(counts(Some(&json!({}))), "-");
    }
}
