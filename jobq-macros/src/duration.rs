//! Duration strings of the attribute: `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
//!
//! The grammar is deliberately tiny (one unsigned integer, one unit, nothing
//! else) so that a duration reads the same in every task and a typo such as
//! `"30 s"` or `"1.5h"` is a compile error rather than a surprise.

use std::fmt;

/// What the error messages say is accepted.
pub const ACCEPTED_FORMS: &str =
    "an unsigned integer followed by `ms`, `s`, `m` or `h`, e.g. \"250ms\", \"30s\", \"5m\", \"1h\"";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// No digits at the start (empty, a sign, a space, a unit alone).
    MissingNumber,
    /// Digits with nothing after them: a bare number is ambiguous.
    MissingUnit,
    /// Something after the digits that is not one of the units.
    UnknownUnit(String),
    /// More milliseconds than a `u64` holds.
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingNumber => write!(f, "missing number"),
            Self::MissingUnit => write!(f, "missing unit"),
            Self::UnknownUnit(unit) => write!(f, "unknown unit `{unit}`"),
            Self::TooLarge => write!(f, "too large"),
        }
    }
}

/// Parses a duration string into milliseconds, the unit of the generated
/// `Duration::from_millis` call (the finest unit accepted, so no rounding).
pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::MissingNumber);
    }
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(DurationError::MissingUnit),
        other => return Err(DurationError::UnknownUnit(other.to_owned())),
    };
    // Only digits are left, so the one way `parse` fails is overflow.
    let count: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    count.checked_mul(per_unit).ok_or(DurationError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("5m"), Ok(300_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
    }

    #[test]
    fn accepts_zero_and_leading_zeros() {
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse_millis("007s"), Ok(7_000));
    }

    #[test]
    fn refuses_a_missing_number() {
        for text in ["", "s", "ms", "-5s", "+5s", " 5s", ".5s"] {
            assert_eq!(
                parse_millis(text),
                Err(DurationError::MissingNumber),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_a_bare_number() {
        assert_eq!(parse_millis("30"), Err(DurationError::MissingUnit));
    }

    #[test]
    fn refuses_unknown_units_and_decorations() {
        for (text, unit) in [
            ("30 s", " s"),
            ("30sec", "sec"),
            ("1.5h", ".5h"),
            ("5M", "M"),
            ("1d", "d"),
            ("1_000ms", "_000ms"),
            ("30s ", "s "),
            ("1h30m", "h30m"),
        ] {
            assert_eq!(
                parse_millis(text),
                Err(DurationError::UnknownUnit(unit.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_overflow() {
        assert_eq!(
            parse_millis("18446744073709551615ms"),
            Ok(u64::MAX),
            "the largest value still fits"
        );
        assert_eq!(
            parse_millis("18446744073709551616ms"),
            Err(DurationError::TooLarge)
        );
        assert_eq!(
            parse_millis("18446744073709552h"),
            Err(DurationError::TooLarge)
        );
    }
}
