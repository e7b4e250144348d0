//! Turning an attempt's error or panic message into what the job's error
//! history stores.
//!
//! A message is data from the handler: it may hold any character and be of
//! any size. `jsonb` refuses U+0000, and a megabyte of error text per
//! attempt would bloat every row it lands in, so the stored copy is
//! cleaned and capped here, once, before it goes anywhere near a
//! statement. The full message still goes to `tracing`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Most bytes of one message kept in the error history.
pub(crate) const MAX_STORED_MESSAGE: usize = 8 * 1024;

/// What U+0000 becomes in a stored message: the replacement character,
/// which says "something unrepresentable stood here".
const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The message as the error history stores it: every U+0000 replaced, and
/// at most [`MAX_STORED_MESSAGE`] bytes of it kept (cut at a character
/// boundary) followed by a marker that says how many bytes were cut.
pub(crate) fn stored(message: &str) -> String {
    let cut_at = if message.len() <= MAX_STORED_MESSAGE {
        message.len()
    } else {
        // The largest char boundary within the cap.
        (0..=MAX_STORED_MESSAGE)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0)
    };
    let kept = &message[..cut_at];
    let mut out = if kept.contains('\0') {
        kept.replace('\0', &NUL_REPLACEMENT.to_string())
    } else {
        kept.to_owned()
    };
    let cut = message.len() - cut_at;
    if cut > 0 {
        out.push_str(&format!(
            " … [{cut} more bytes cut; the full message is in the worker's log]"
        ));
    }
    out
}

/// `describe()`'s text, or a note saying it panicked: a user's `Display`
/// impl is handler code too, and its panic must not escape into the
/// worker.
pub(crate) fn text_of(describe: impl FnOnce() -> String) -> String {
    match catch_unwind(AssertUnwindSafe(describe)) {
        Ok(text) => text,
        Err(panic) => format!(
            "<formatting the error panicked: {}>",
            panic_message(&*panic)
        ),
    }
}

/// The message a panic carried, when it is a string.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_messages_are_kept_as_they_are() {
        for m in [
            "",
            "boom",
            "quotes \" and \\ and \\u0000 as text",
            "日本語 🚀 \u{202e}rtl",
        ] {
            assert_eq!(stored(m), m);
        }
    }

    #[test]
    fn nul_characters_are_replaced_wherever_they_stand() {
        for m in ["\0", "\0start", "mid\0dle", "end\0", "\0\0\0many\0"] {
            let s = stored(m);
            assert!(!s.contains('\0'), "{s:?}");
            assert_eq!(s.chars().count(), m.chars().count(), "{s:?}");
            assert_eq!(s.matches(NUL_REPLACEMENT).count(), m.matches('\0').count());
        }
    }

    #[test]
    fn other_control_characters_stay() {
        let m: String = (1u8..32).map(char::from).collect();
        assert_eq!(stored(&m), m);
    }

    #[test]
    fn long_messages_are_capped_with_a_marker_saying_how_much_was_cut() {
        let m = "x".repeat(MAX_STORED_MESSAGE + 1000);
        let s = stored(&m);
        assert!(s.starts_with(&"x".repeat(MAX_STORED_MESSAGE)));
        assert!(
            s.contains("1000 more bytes cut"),
            "{}",
            &s[MAX_STORED_MESSAGE..]
        );
        assert!(s.len() < MAX_STORED_MESSAGE + 100);
        // Exactly at the cap: nothing cut.
        let m = "y".repeat(MAX_STORED_MESSAGE);
        assert_eq!(stored(&m), m);
    }

    #[test]
    fn the_cap_never_splits_a_character() {
        // Four-byte characters straddle the cap for every offset.
        for pad in 0..4 {
            let m = format!("{}{}", "a".repeat(pad), "🚀".repeat(MAX_STORED_MESSAGE));
            let s = stored(&m);
            let kept = s.split(" … [").next().unwrap();
            assert!(kept.len() <= MAX_STORED_MESSAGE && kept.len() > MAX_STORED_MESSAGE - 4);
            assert!(s.contains(&format!("{} more bytes cut", m.len() - kept.len())));
        }
    }

    #[test]
    fn nul_characters_beyond_the_cap_cost_nothing_and_those_before_are_replaced() {
        let m = format!(
            "{}\0{}",
            "a".repeat(10),
            "\0".repeat(MAX_STORED_MESSAGE * 2)
        );
        let s = stored(&m);
        assert!(!s.contains('\0'));
    }

    #[test]
    fn a_panicking_display_becomes_a_note() {
        struct Bad;
        impl std::fmt::Display for Bad {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("display exploded")
            }
        }
        let text = text_of(|| Bad.to_string());
        assert!(
            text.contains("formatting the error panicked: display exploded"),
            "{text}"
        );
        assert_eq!(text_of(|| "fine".to_owned()), "fine");
    }
}
