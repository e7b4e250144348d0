//! Job headers and partition keys: checked at enqueue, read back leniently.
//!
//! Headers are string pairs stored as a `jsonb` object. `jsonb` cannot hold
//! the character U+0000 and `text` (the key's column) cannot either, so a
//! key, header name or header value containing it is refused at enqueue
//! with an error naming what holds it, as payloads with U+0000 are (see
//! `payload_check`); nothing is sent to the database then. Every other
//! string is stored as given.

use std::collections::BTreeMap;

use crate::Error;

/// Longest partition key, in characters: the column's CHECK.
pub(crate) const MAX_KEY_CHARS: usize = 200;
/// Longest header name, in characters.
pub(crate) const MAX_HEADER_NAME_CHARS: usize = 200;
/// Largest headers object, as JSON text, in bytes. Headers travel with
/// every claim of the job; data belongs in the payload.
pub(crate) const MAX_HEADERS_BYTES: usize = 64 * 1024;

/// Checks a partition key.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid("key", "the partition key is empty"));
    }
    if key.contains('\0') {
        return Err(Error::invalid(
            "key",
            "the partition key contains the character U+0000, which PostgreSQL text cannot hold",
        ));
    }
    let chars = key.chars().count();
    if chars > MAX_KEY_CHARS {
        return Err(Error::invalid(
            "key",
            format!(
                "the partition key is {chars} characters long, over the limit of {MAX_KEY_CHARS}"
            ),
        ));
    }
    Ok(())
}

/// A header name as shown in an error: quoted, and cut short, since it is
/// the caller's data.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(40).collect();
    if cut.len() < name.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The headers as the JSON text of an object (a later pair of the same
/// name wins), `None` when there are none. Values never appear in errors:
/// headers often carry tokens.
pub(crate) fn to_json(headers: &[(String, String)]) -> Result<Option<String>, Error> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        if name.is_empty() {
            return Err(Error::invalid("header", "a header name is empty"));
        }
        if name.contains('\0') {
            return Err(Error::invalid(
                "header",
                format!(
                    "header name {} contains the character U+0000, which jsonb cannot hold",
                    shown(name)
                ),
            ));
        }
        let chars = name.chars().count();
        if chars > MAX_HEADER_NAME_CHARS {
            return Err(Error::invalid(
                "header",
                format!(
                    "header name {} is {chars} characters long, over the limit of \
                     {MAX_HEADER_NAME_CHARS}",
                    shown(name)
                ),
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(
                "header",
                format!(
                    "the value of header {} contains the character U+0000, which jsonb cannot hold",
                    shown(name)
                ),
            ));
        }
        map.insert(name.as_str(), value.as_str());
    }
    // Serializing a map of strings cannot fail; an error is still reported,
    // not unwrapped.
    let json = serde_json::to_string(&map)
        .map_err(|e| Error::invalid("header", format!("headers do not serialize: {e}")))?;
    if json.len() > MAX_HEADERS_BYTES {
        return Err(Error::invalid(
            "header",
            format!(
                "the headers' JSON text is {} bytes, over the limit of {MAX_HEADERS_BYTES}",
                json.len()
            ),
        ));
    }
    Ok(Some(json))
}

/// Headers read back from a row. Rows written by jobq hold strings only;
/// one inserted by raw SQL may hold other JSON values, which are kept as
/// their JSON text rather than failing the job or the lookup.
pub(crate) fn parse(json: Option<&str>) -> BTreeMap<String, String> {
    let Some(json) = json else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(map) => map
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(s) => (name, s),
                other => (name, other.to_string()),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "job headers are not a JSON object; ignored");
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn round_trips_hostile_strings_and_refuses_nul() {
        let hostile = pairs(&[
            ("quote\"back\\slash", "'; DROP TABLE jobq.jobs; --"),
            ("emoji 🦀", "\u{7f}\u{1b}[31m\r\n\t"),
            ("x-trace", "\u{FEFF}\u{202E}rtl"),
            ("empty-value", ""),
        ]);
        let json = to_json(&hostile).expect("valid").expect("some");
        let back = parse(Some(&json));
        assert_eq!(back.len(), 4);
        assert_eq!(back["quote\"back\\slash"], "'; DROP TABLE jobq.jobs; --");
        assert_eq!(back["emoji 🦀"], "\u{7f}\u{1b}[31m\r\n\t");

        for bad in [pairs(&[("a\0b", "v")]), pairs(&[("a", "secret\0token")])] {
            let e = to_json(&bad).expect_err("NUL refused").to_string();
            assert!(e.contains("U+0000"), "{e}");
            assert!(!e.contains("secret"), "a value leaked into the error: {e}");
        }
        assert!(to_json(&pairs(&[("", "v")])).is_err());
        let long = "n".repeat(MAX_HEADER_NAME_CHARS + 1);
        assert!(to_json(&[(long, String::new())]).is_err());
        let big = "v".repeat(MAX_HEADERS_BYTES);
        assert!(to_json(&[("big".into(), big)]).is_err());
        assert_eq!(to_json(&[]).expect("none"), None);
    }

    #[test]
    fn later_pairs_win_and_raw_values_are_kept_as_json_text() {
        let json = to_json(&pairs(&[("a", "1"), ("a", "2")]))
            .expect("valid")
            .expect("some");
        assert_eq!(parse(Some(&json))["a"], "2");
        let raw = parse(Some(r#"{"n": 5, "o": {"x": null}, "s": "t"}"#));
        assert_eq!(raw["n"], "5");
        assert_eq!(raw["o"], r#"{"x":null}"#);
        assert_eq!(raw["s"], "t");
        assert!(parse(Some("[1]")).is_empty());
        assert!(parse(None).is_empty());
    }

    #[test]
    fn keys_are_length_checked_and_nul_free() {
        assert!(check_key("customer-42").is_ok());
        assert!(check_key(&"é".repeat(MAX_KEY_CHARS)).is_ok());
        assert!(check_key(&"é".repeat(MAX_KEY_CHARS + 1)).is_err());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
    }
}
