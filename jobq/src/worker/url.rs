//! Checking database URLs and keeping passwords out of messages.

use crate::Error;

/// The URL with any password replaced by `***`, fit for logs and errors.
/// Handles both URL (`postgres://user:pw@host/db`) and key-value
/// (`host=... password=...`) forms.
pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The userinfo ends at the last '@' before the path.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{}", &rest[at + 1..]);
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rejects URLs that cannot name a PostgreSQL database, before any
/// connection attempt, with a message that says what is wrong.
pub(crate) fn check(url: &str) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    if url.trim().is_empty() {
        return Err(invalid(
            "it is empty; set DATABASE_URL or call WorkerBuilder::database_url",
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(invalid(&format!(
                "the scheme is {scheme:?}; expected postgres:// or postgresql://"
            )));
        }
        if rest.is_empty() {
            return Err(invalid("it names no host"));
        }
        return Ok(());
    }
    if url.contains('=') {
        return Ok(());
    }
    Err(invalid(
        "expected postgres://user:password@host:port/database or host=... dbname=...",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("host=h password=secret dbname=d"),
            "host=h password=*** dbname=d"
        );
    }

    #[test]
    fn rejects_malformed_urls() {
        assert!(check("").is_err());
        assert!(check("mysql://h/db").is_err());
        assert!(check("not a url").is_err());
        assert!(check("postgres://").is_err());
        assert!(check("postgres://u:p@h/db").is_ok());
        assert!(check("host=localhost dbname=x").is_ok());
        let msg = check("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }
}
