//! Who may act: the token, login sessions, and the checks every POST
//! passes (same origin, session cookie, CSRF token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

use crate::error::WebError;

/// The session cookie's name.
pub const COOKIE: &str = "jobq_session";

/// Sessions kept at most; the oldest go first when full, so a flood of
/// logins cannot grow memory without bound.
const MAX_SESSIONS: usize = 1_000;

struct Session {
    csrf: String,
    expires: Instant,
}

/// The token and the live sessions.
pub struct Auth {
    token: Option<String>,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token is configured: nobody may act.
    ReadOnly,
    /// A token is configured and this request has no valid session.
    LoggedOut,
    /// Logged in; forms carry this CSRF token.
    LoggedIn { csrf: String },
}

impl Auth {
    pub fn new(token: Option<String>, lifetime: Duration) -> Self {
        Self {
            token,
            lifetime,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token, compared in constant time.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    }

    /// Starts a session; returns its id (the cookie's value).
    pub fn login(&self) -> Result<String, WebError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf,
                expires: now + self.lifetime,
            },
        );
        Ok(id)
    }

    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            self.lock().remove(id);
        }
    }

    /// What the request's session allows.
    pub fn access(&self, headers: &HeaderMap) -> Access {
        if !self.enabled() {
            return Access::ReadOnly;
        }
        let Some(id) = session_cookie(headers) else {
            return Access::LoggedOut;
        };
        let sessions = self.lock();
        match sessions.get(id) {
            Some(s) if s.expires > Instant::now() => Access::LoggedIn {
                csrf: s.csrf.clone(),
            },
            _ => Access::LoggedOut,
        }
    }

    /// Refuses (403) a POST that may not act: read-only dashboard, request
    /// from another origin, no session, or a wrong CSRF token.
    pub fn check_action(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), WebError> {
        check_origin(headers)?;
        match self.access(headers) {
            Access::ReadOnly => Err(WebError::Forbidden(
                "the dashboard is read-only: start it with a token to allow actions",
            )),
            Access::LoggedOut => Err(WebError::Forbidden("log in with the token first")),
            Access::LoggedIn { csrf: expected } => {
                let given = csrf.unwrap_or("");
                if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                    Ok(())
                } else {
                    Err(WebError::Forbidden(
                        "the form's CSRF token is missing or stale: reload the page",
                    ))
                }
            }
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave a session half
        // written, so a poisoned map is still sound.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Refuses a request a browser sent from another site: its `Origin` must
/// name this host, and without `Origin`, `Sec-Fetch-Site` (when sent) must
/// not say cross-site. Requests from tools such as curl send neither.
pub fn check_origin(headers: &HeaderMap) -> Result<(), WebError> {
    const REFUSED: WebError = WebError::Forbidden("cross-origin request refused");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| REFUSED)?;
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .ok_or(REFUSED)?;
        if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Err(REFUSED);
        }
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site") | Some("same-site") => Err(REFUSED),
        _ => Ok(()),
    }
}

/// Wraps `router` so that it answers only requests whose `Host` (without
/// its port) is one of `hosts`.
pub fn only_hosts(router: axum::Router, hosts: Vec<String>) -> axum::Router {
    let hosts: std::sync::Arc<[String]> = hosts.into();
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let allowed = host_allowed(request.headers(), &hosts);
            async move {
                if allowed {
                    next.run(request).await
                } else {
                    use axum::response::IntoResponse;
                    WebError::Forbidden("this host name is not allowed").into_response()
                }
            }
        },
    ))
}

fn host_allowed(headers: &HeaderMap, hosts: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // "[::1]:8080" keeps its brackets; "name:8080" loses the port.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// 32 random bytes from the operating system, as hex.
fn random_hex() -> Result<String, WebError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| WebError::Internal(format!("no random bytes from the system: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn origin_must_name_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok(), "no Origin: a tool, allowed");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_origin(&h).is_err());
    }

    #[test]
    fn hosts_are_compared_without_their_port() {
        let hosts = vec!["localhost".to_owned(), "[::1]".to_owned()];
        let with = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(h));
            host_allowed(&m, &hosts)
        };
        assert!(with("localhost:8080"));
        assert!(with("LOCALHOST"));
        assert!(with("[::1]:8080"));
        assert!(with("[::1]"));
        assert!(!with("evil.example:8080"));
        assert!(!with("localhost.evil.example"));
        assert!(!host_allowed(&HeaderMap::new(), &hosts), "no Host");
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; jobq_session=xyz; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("xyz"));
    }
}
