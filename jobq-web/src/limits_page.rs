//! The limits page: live blocks (`TaskError::rate_limited`), the rate
//! buckets that are not full, and lifting a block early. The rates
//! themselves are configured in the worker binaries, not stored in the
//! database; the page says so.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, Redirect};

use crate::error::WebError;
use crate::form::Fields;
use crate::pages::{back_to, encoded_name, render, time, url_encode, Base, Chrome, Shared};
use crate::text::{cell, clip};

/// A block as the page shows it: names made safe to show, and the raw
/// names percent-encoded for links and the unblock form.
struct BlockRow {
    task: String,
    task_q: String,
    key: Option<String>,
    key_q: String,
    until: String,
    left: String,
}

struct BucketRow {
    task: String,
    task_q: String,
    key: Option<String>,
    full_at: String,
    full_in: String,
}

#[derive(Template)]
#[template(path = "limits.html")]
struct Limits {
    chrome: Chrome,
    blocks: Vec<BlockRow>,
    buckets: Vec<BucketRow>,
}

/// A duration to the second (milliseconds under one).
fn left(d: std::time::Duration) -> String {
    if d.as_secs() >= 1 {
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub(crate) async fn limits(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    let mut conn = app.conn().await?;
    let blocks = jobq::blocks(&mut conn)
        .await
        .map_err(WebError::jobq("listing blocks"))?;
    let buckets = jobq::rate_buckets(&mut conn)
        .await
        .map_err(WebError::jobq("listing rate buckets"))?;
    drop(conn);
    let q = Fields::parse(query.as_deref().unwrap_or("").as_bytes());
    render(&Limits {
        chrome: Chrome::new(&app, base, &headers, "limits").with_notice(&q),
        blocks: blocks
            .into_iter()
            .map(|b| BlockRow {
                task: cell(&b.task),
                task_q: url_encode(&b.task),
                key_q: b.key.as_deref().map(url_encode).unwrap_or_default(),
                key: b.key.as_deref().map(cell),
                until: time(b.until),
                left: left(b.remaining),
            })
            .collect(),
        buckets: buckets
            .into_iter()
            .map(|b| BucketRow {
                task: cell(&b.task),
                task_q: url_encode(&b.task),
                key: b.key.as_deref().map(cell),
                full_at: time(b.full_at),
                full_in: left(b.full_in),
            })
            .collect(),
    })
}

/// Lifts the block the form names (task, and key unless the block is the
/// whole task's). Redirects back with whether there was one and how many
/// jobs came back.
pub(crate) async fn unblock(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, WebError> {
    let fields = Fields::parse(&body);
    app.auth.check_action(&headers, fields.get("csrf"))?;
    let task = encoded_name(&fields, "task")?;
    // No key field, or an empty one: the whole task's block.
    let key = match fields.get("key").filter(|k| !k.is_empty()) {
        Some(_) => Some(encoded_name(&fields, "key")?),
        None => None,
    };
    if task.contains('\0') || key.as_deref().is_some_and(|k| k.contains('\0')) {
        // PostgreSQL text cannot hold NUL: no block has such a name.
        return Ok(back_to(&base.0, &fields, "lifted=0"));
    }
    let mut conn = app.conn().await?;
    let back = jobq::unblock(&mut conn, &task, key.as_deref())
        .await
        .map_err(|e| match e {
            jobq::Error::InvalidOptions { reason, .. } => WebError::BadRequest(reason),
            source => WebError::Jobq {
                context: "lifting a block",
                source,
            },
        })?;
    tracing::info!(
        task = %clip(&task, 200),
        key = %clip(key.as_deref().unwrap_or(""), 200),
        lifted = back.is_some(),
        "jobq-web: block lifted"
    );
    let outcome = match back {
        Some(n) => format!("lifted=1&back={n}"),
        None => "lifted=0".to_owned(),
    };
    Ok(back_to(&base.0, &fields, &outcome))
}
