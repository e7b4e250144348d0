//! Errors of a page or action, and the responses they become.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A jobq call failed. Its message never holds a password (jobq masks
    /// connection strings), but the page shows only a summary and the log
    /// gets the rest.
    #[error("{context}: {source}")]
    Jobq {
        context: &'static str,
        #[source]
        source: jobq::Error,
    },
    /// No connection from the pool.
    #[error("no database connection: {0}")]
    Pool(String),
    /// Not allowed.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No such page or job.
    #[error("not found")]
    NotFound,
    /// A value in the request cannot be read.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    pub fn jobq(context: &'static str) -> impl FnOnce(jobq::Error) -> WebError {
        move |source| WebError::Jobq { context, source }
    }

    fn status(&self) -> StatusCode {
        match self {
            WebError::Jobq { .. } | WebError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the page says: specific for the caller's mistakes, a summary
    /// for the server's.
    fn shown(&self) -> String {
        match self {
            WebError::Jobq { context, .. } => {
                format!("{context} failed; the server's log has the details")
            }
            WebError::Pool(_) => {
                "no database connection; the server's log has the details".to_owned()
            }
            WebError::Internal(_) => "internal error; the server's log has the details".to_owned(),
            WebError::Forbidden(why) => (*why).to_owned(),
            WebError::NotFound => "not found".to_owned(),
            WebError::BadRequest(why) => crate::text::clip(why, 500),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %error_chain(&self), "jobq-web: request failed");
        } else {
            tracing::debug!(error = %self, "jobq-web: request refused");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            message: self.shown(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
