//! Making database text safe to show: askama escapes HTML; this removes
//! what escaping leaves (NUL and other control characters, which HTML
//! cannot carry) and cuts values that would swamp a page.

/// `s` with control characters other than newline and tab shown as
/// `\u{..}`, cut to at most `max` characters (with `…` when cut).
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A name in a table cell: one line, at most 120 characters.
pub fn cell(s: &str) -> String {
    clip(&s.replace(['\n', '\t'], " "), 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_spelled_out_and_long_text_cut() {
        assert_eq!(clip("a\0b", 10), "a\\u{0}b");
        assert_eq!(clip("a\u{1b}[2J", 10), "a\\u{1b}[2J");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("keep\nlines\tand tabs", 100), "keep\nlines\tand tabs");
        assert_eq!(cell("two\nlines"), "two lines");
    }
}
