//! Connection strings as libpq reads them, turned into an ordered list of
//! settings: a `postgres://` URL (through the `url` crate) or a key-value
//! string (`host=db password='a b'`).
//!
//! tokio-postgres parses both forms too, but refuses what libpq accepts
//! and jobq needs (`sslmode=verify-full`, `sslrootcert`), and its URL
//! reader ends the user information at the first `@`, where a URL's ends
//! at the last. So the string is read here into settings, jobq takes the
//! TLS ones, and the rest go to tokio-postgres' own key-value parser.
//! The same settings render the string for messages, password masked.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// What a connection string says, in order, each key once (a later
/// setting replaces an earlier one, as in libpq).
#[derive(Clone, Default)]
pub(crate) struct Settings {
    pairs: Vec<(String, String)>,
    /// The URL it came from, for showing it in the user's own form.
    url: Option<url::Url>,
}

/// The password replacement in shown strings.
const MASK: &str = "***";

impl Settings {
    /// Reads a URL or a key-value string. Errors never quote values.
    pub(crate) fn parse(s: &str) -> Result<Settings, String> {
        if s.trim().is_empty() {
            return Err("it is empty".to_owned());
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !matches!(scheme, "postgres" | "postgresql") {
                // The scheme cannot hold a password: quoting it is safe.
                return Err(format!(
                    "the scheme is {scheme:?}; expected postgres:// or postgresql://"
                ));
            }
            return Self::from_url(s);
        }
        if !s.contains('=') {
            return Err(
                "expected postgres://user:password@host:port/database or host=... dbname=..."
                    .to_owned(),
            );
        }
        Self::from_key_values(s)
    }

    fn from_url(s: &str) -> Result<Settings, String> {
        let url = url::Url::parse(s).map_err(|e| {
            format!(
                "it is not a valid URL: {e} (for several hosts or a Unix socket without \
                 a host, use the key-value form: host=a,b port=5432,5433 or host=/tmp ...)"
            )
        })?;
        let mut settings = Settings::default();
        let decode = |what: &str, raw: &str| -> Result<String, String> {
            percent_decode_str(raw)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| format!("its {what} is not UTF-8 once percent-decoded"))
        };
        if !url.username().is_empty() {
            settings.set("user", decode("user name", url.username())?);
        }
        if let Some(password) = url.password() {
            settings.set("password", decode("password", password)?);
        }
        if let Some(host) = url.host_str() {
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            // A percent-encoded host is a Unix socket directory.
            settings.set("host", decode("host", host)?);
        }
        if let Some(port) = url.port() {
            settings.set("port", port.to_string());
        }
        let dbname = url.path().trim_start_matches('/');
        if !dbname.is_empty() {
            settings.set("dbname", decode("database name", dbname)?);
        }
        // libpq decodes query values with %XX only ('+' stays '+'), so the
        // query is split here rather than read as a web form.
        for param in url.query().unwrap_or("").split('&') {
            if param.is_empty() {
                continue;
            }
            let (key, value) = param
                .split_once('=')
                .ok_or_else(|| "a query parameter has no '=value'".to_owned())?;
            let key = decode("query parameter name", key)?;
            let value = decode("query parameter value", value)?;
            settings.set(&key, value);
        }
        settings.url = Some(url);
        Ok(settings)
    }

    /// libpq's key-value form: `key = value` pairs separated by white
    /// space; a value is either bare (ending at white space) or in single
    /// quotes, and a backslash escapes the next character in both.
    fn from_key_values(s: &str) -> Result<Settings, String> {
        let mut settings = Settings::default();
        let mut chars = s.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut key = String::new();
            while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
                key.push(c);
            }
            if key.is_empty() {
                if chars.peek().is_none() {
                    return Ok(settings);
                }
                return Err("a setting has no name before '='".to_owned());
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return Err(format!("the setting {key:?} has no '=value'"));
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!("the value of {key:?} lacks its closing quote"))
                        }
                        Some('\'') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
                if value.is_empty() {
                    return Err(format!(
                        "the setting {key:?} has an empty value; write {key}=''"
                    ));
                }
            }
            settings.set(&key, value);
        }
    }

    fn set(&mut self, key: &str, value: String) {
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((key.to_owned(), value)),
        }
    }

    /// Removes and returns the setting `key`.
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The settings in libpq's key-value form, every value quoted, for
    /// tokio-postgres' parser.
    pub(crate) fn to_key_values(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.pairs {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(key);
            out.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        out
    }

    /// The string in the form it was given, with every password (the
    /// URL's user information, any `password` setting whatever its case)
    /// replaced by `***`.
    pub(crate) fn shown(&self) -> String {
        match &self.url {
            Some(url) => show_url(url),
            None => self
                .pairs
                .iter()
                .map(|(key, value)| {
                    if is_password(key) {
                        format!("{key}={MASK}")
                    } else if value.is_empty()
                        || value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
                    {
                        format!(
                            "{key}='{}'",
                            value.replace('\\', "\\\\").replace('\'', "\\'")
                        )
                    } else {
                        format!("{key}={value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn is_password(key: &str) -> bool {
    key.eq_ignore_ascii_case("password")
}

fn show_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have user information, which
        // this one has.
        let _ = shown.set_password(Some(MASK));
    }
    if let Some(query) = url.query() {
        let masked: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if is_password(&percent_decode_str(key).decode_utf8_lossy()) => {
                    format!("{key}={MASK}")
                }
                _ => param.to_owned(),
            })
            .collect();
        shown.set_query(Some(&masked.join("&")));
    }
    shown.into()
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        Settings::parse(s).expect(s).pairs
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_urls_as_libpq_does() {
        assert_eq!(
            pairs("postgres://u:p%40ss:w@h:6432/db?sslmode=verify-full&application_name=a+b"),
            kv(&[
                ("user", "u"),
                ("password", "p@ss:w"),
                ("host", "h"),
                ("port", "6432"),
                ("dbname", "db"),
                ("sslmode", "verify-full"),
                ("application_name", "a+b"),
            ])
        );
        // An unencoded '@' in the password: the user information ends at
        // the last one.
        assert_eq!(
            pairs("postgresql://u:a@b@h/db"),
            kv(&[
                ("user", "u"),
                ("password", "a@b"),
                ("host", "h"),
                ("dbname", "db")
            ])
        );
        // Unix sockets, the ways libpq's documentation writes them.
        assert_eq!(
            pairs("postgresql:///db?host=/var/run/postgresql"),
            kv(&[("dbname", "db"), ("host", "/var/run/postgresql")])
        );
        assert_eq!(
            pairs("postgresql://%2Fvar%2Frun%2Fpostgresql/db"),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        // What the url crate cannot read, the key-value form can; the
        // error says so.
        for url in ["postgres://u@/db?host=/tmp", "postgres://h1:1,h2:2/db"] {
            let err = Settings::parse(url).map(drop).unwrap_err();
            assert!(err.contains("use the key-value form"), "{url}: {err}");
        }
        assert_eq!(
            pairs("postgres://[::1]:5432/x?host=%2Ftmp"),
            kv(&[("host", "/tmp"), ("port", "5432"), ("dbname", "x")])
        );
    }

    #[test]
    fn reads_key_value_strings_as_libpq_does() {
        assert_eq!(
            pairs(r"host=h password='a b\'c' user = u dbname=d\ x port=1"),
            kv(&[
                ("host", "h"),
                ("password", "a b'c"),
                ("user", "u"),
                ("dbname", "d x"),
                ("port", "1"),
            ])
        );
        assert_eq!(
            pairs("host=h password=''"),
            kv(&[("host", "h"), ("password", "")])
        );
        for bad in ["host=h password='open", "host", "=x", "host=h port="] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hands_tokio_postgres_what_it_reads_back() {
        let settings = Settings::parse(r"host=h password='it\'s' dbname='a\\b c'").unwrap();
        let config: tokio_postgres::Config = settings.to_key_values().parse().unwrap();
        assert_eq!(config.get_dbname(), Some(r"a\b c"));
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn masks_passwords_in_every_form() {
        let secret = "s3cr\u{e9}t";
        let cases = [
            format!("postgres://u:{secret}@h/db"),
            "postgres://u:p%40ss@h/db".to_owned(),
            "postgres://u:a@b:c@h/db".to_owned(),
            format!("postgres://u@h/db?password={secret}&sslmode=require"),
            format!("postgres://u@h/db?PASSWORD={secret}"),
            format!("postgres://u@h/db?pass%77ord={secret}"),
            format!("host=h password={secret} dbname=d"),
            format!("host=h password='{secret} with spaces' dbname=d"),
            format!("host=h PASSWORD={secret}"),
        ];
        for case in &cases {
            let shown = Settings::parse(case).expect(case).shown();
            for fragment in [secret, "p%40ss", "p@ss", "a@b", "b:c", "spaces"] {
                assert!(!shown.contains(fragment), "{case} shown as {shown}");
            }
            assert!(shown.contains(MASK), "{case} shown as {shown}");
        }
        assert_eq!(
            Settings::parse("postgres://u:x@h:1/db?sslmode=require")
                .unwrap()
                .shown(),
            "postgres://u:***@h:1/db?sslmode=require"
        );
        assert_eq!(
            Settings::parse("host=h password=x dbname='a b'")
                .unwrap()
                .shown(),
            "host=h password=*** dbname='a b'"
        );
        // Nothing to mask: shown as given.
        assert_eq!(
            Settings::parse("postgres://u:@h/db").unwrap().shown(),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn errors_never_quote_values() {
        for bad in [
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u@h/db?hunter2",
            "postgres://u:hunter2@h1:1,h2:2/db",
            "host=h password='hunter2",
            "mysql://u:hunter2@h/db",
        ] {
            let err = Settings::parse(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }
}
