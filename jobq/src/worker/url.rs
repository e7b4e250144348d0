//! Reading database URLs for the worker, with errors that never show the
//! password. The reading itself is jobq-diesel's [`ConnectOptions`], the
//! one place that parses connection strings.

use jobq_diesel::ConnectOptions;

use crate::Error;

/// Reads `url` (a `postgres://` URL or a key-value string) or says what is
/// wrong with it, before any connection attempt.
pub(crate) fn parse(url: &str) -> Result<ConnectOptions, Error> {
    if url.trim().is_empty() {
        return Err(Error::InvalidUrl {
            url: String::new(),
            reason: "it is empty; set DATABASE_URL or call WorkerBuilder::database_url".into(),
        });
    }
    ConnectOptions::parse(url).map_err(|e| Error::InvalidUrl {
        url: e.shown,
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_urls_without_showing_the_password() {
        for bad in [
            "",
            "mysql://u:secret@h/db",
            "not a url",
            "postgres://u:secret@h:port/db",
            "postgres://u@h/db?password=secret&sslmode=sometimes",
            "host=h password='secret",
        ] {
            let err = parse(bad).expect_err(bad);
            let msg = format!("{err} {err:?}");
            assert!(!msg.contains("secret"), "{bad}: {msg}");
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {msg}");
        }
        assert!(parse("postgres://u:p@h/db").is_ok());
        assert!(parse("host=localhost dbname=x").is_ok());
    }
}
