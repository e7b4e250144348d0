//! Printing: aligned tables for people, JSON for scripts.
//!
//! Every string from the database is data that anyone who can enqueue a
//! job chose, so before it reaches a terminal it is made inert: control
//! characters (newlines, escape sequences, NUL) and bidirectional
//! overrides are written as visible escapes, and long values are cut,
//! so one hostile name can neither break a table's rows nor drive the
//! terminal.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

/// The widest a table cell gets, in characters.
const MAX_CELL: usize = 60;

/// `s` with every character a terminal would act on written as an escape.
pub fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A line of JSON text made inert: serde_json already escapes control
/// characters inside strings, so only the invisible formatting characters
/// are left, and they are written as JSON escapes (`\u202e`), which keeps
/// the text valid JSON that decodes to the same value.
pub fn inert_json(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() || is_format(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Invisible characters that reorder or hide text: bidirectional
/// controls, zero-width characters and the like.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{feff}' | '\u{061c}')
}

/// [`inert`], cut to `max` characters with an ellipsis.
pub fn cell(s: &str, max: usize) -> String {
    let safe = inert(s);
    if safe.chars().count() <= max {
        return safe;
    }
    let mut cut: String = safe.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A table: a header and rows of cells, printed with aligned columns.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row; each cell is made inert and cut.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| cell(c.as_ref(), MAX_CELL))
                .collect(),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, c) in cells.enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(c.chars().count());
                text.push_str(c);
                text.extend(std::iter::repeat_n(' ', pad + 2));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut self.header.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

/// Writes `text` to stdout; a closed pipe (`jobq ... | head`) ends quietly.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Writes `value` as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => print(&format!("{text}\n")),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}

/// A time for a table: UTC to the second.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A duration for a table, to the second or millisecond.
pub fn age(d: std::time::Duration) -> String {
    if d.as_secs() >= 1 {
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_made_inert_and_cut() {
        assert_eq!(
            inert("a\nb\r\tc\0d\x1b[31m"),
            "a\\nb\\r\\tc\\u{0}d\\u{1b}[31m"
        );
        assert_eq!(inert("\u{202e}abc"), "\\u{202e}abc");
        assert_eq!(inert("back\\slash"), "back\\\\slash");
        assert_eq!(inert("ünïcödé 😀"), "ünïcödé 😀");
        let json = serde_json::to_string(&serde_json::json!({"s": "\u{202e}a\nb\\"})).unwrap();
        let shown = inert_json(&json);
        assert_eq!(shown, r#"{"s":"\u202ea\nb\\"}"#);
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["s"], "\u{202e}a\nb\\");
        let long = cell(&"x".repeat(1000), 10);
        assert_eq!(long.chars().count(), 10);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(vec!["ID", "TASK"]);
        t.row(["1", "short"]);
        t.row(["1234", "a\nb"]);
        assert_eq!(t.render(), "ID    TASK\n1     short\n1234  a\\nb\n");
    }
}
