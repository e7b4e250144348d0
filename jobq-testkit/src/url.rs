//! Small helpers on connection strings: pointing them at another
//! database, and hiding their password in messages (with jobq's own
//! reader, so that the tests mask what jobq masks).

/// Returns `url` with its database replaced by `database`.
///
/// Handles `postgres://` / `postgresql://` URLs (query parameters are
/// kept) and libpq `key=value` strings (a `dbname=` is appended, which
/// overrides an earlier one).
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let Some(rest_start) = scheme_end(url) else {
        return format!("{url} dbname={database}");
    };
    let (before_query, query) = match url[rest_start..].find('?') {
        Some(i) => url.split_at(rest_start + i),
        None => (url, ""),
    };
    let authority_end = before_query[rest_start..]
        .find('/')
        .map_or(before_query.len(), |i| rest_start + i);
    format!("{}/{database}{query}", &before_query[..authority_end])
}

/// Returns `url` with any password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    jobq_diesel::redact(url)
}

fn scheme_end(url: &str) -> Option<usize> {
    ["postgres://", "postgresql://"]
        .iter()
        .find(|scheme| url.starts_with(*scheme))
        .map(|scheme| scheme.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x"),
            "postgresql://h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }
}
