//! The `#[jobq::task]` attribute. Use it through the `jobq` crate, which
//! re-exports it as `jobq::task`; the generated code refers to `jobq` only.

mod args;
mod cron;
mod duration;
mod errors;
mod expand;
mod rate;
mod signature;

use proc_macro::TokenStream;

/// Turns an async fn into a jobq task.
///
/// ```text
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Welcome { user_id: i64 }
///
/// #[jobq::task(concurrency = 4, retry = "30s")]
/// async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
///     Ok(())
/// }
///
/// #[jobq::task(name = "reports.nightly", queue = "reports", max_attempts = 3, timeout = "5m", priority = 5)]
/// pub async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), jobq::TaskError> {
///     Ok(())
/// }
///
/// // Anywhere with a diesel-async connection, inside a transaction or not:
/// let id = send_welcome::enqueue(&mut conn, &Welcome { user_id: 7 }).await?;
/// ```
///
/// # The function
///
/// It must be an `async fn` without generics that returns
/// `Result<(), jobq::TaskError>` and takes the payload as its last argument,
/// `(job: Payload)`. Before the payload it may take, in any order, the
/// context, `ctx: jobq::Context` (once), and any number of application
/// states, `State(pool): jobq::State<Pool>`, which the worker is given with
/// `WorkerBuilder::state` and checks for when it is built. The payload is
/// any owned type that implements `serde::Serialize` and
/// `serde::Deserialize`; the future must be `Send + 'static`. The function
/// is kept as written and can still be called directly, e.g. from tests.
///
/// # Arguments
///
/// All are optional.
///
/// | argument | value | default |
/// | --- | --- | --- |
/// | `name` | string of 1 to 200 characters, unique in the worker binary; stored in each job row | the fn's name |
/// | `queue` | string of 1 to 200 characters | `"default"` |
/// | `concurrency` | integer from 1 to `i32::MAX`: attempts one worker process runs at once | `10` |
/// | `retry` | duration > 0: base delay of the exponential backoff | `"1s"` |
/// | `max_attempts` | integer from 1 to `i32::MAX`, the first attempt included | `20` |
/// | `timeout` | duration > 0: time limit of one attempt | none |
/// | `priority` | integer from -32768 to 32767; higher runs first | `0` |
/// | `global_concurrency` | integer from 1 to `i32::MAX`: attempts running at once across every worker process, enforced by PostgreSQL at claim time | none |
/// | `key_concurrency` | integer from 1 to `i32::MAX`: attempts running at once per partition key (`EnqueueOptions::key`), fleet-wide; `1` runs a key's jobs one at a time, in priority then enqueue order | none |
/// | `cron` | cron expression, five fields or six with seconds first: a periodic task, whose payload is `jobq::Tick` | none |
/// | `timezone` | IANA time zone the `cron` expression is read in | `"UTC"` |
/// | `catch_up` | duration: after downtime, run missed ticks up to this age | only the most recent missed tick |
/// | `then` | path of a task taking `jobq::Finished`: enqueued, in the same transaction, when a job of this task ends (completed, failed or cancelled) | none |
///
/// A duration is an unsigned integer followed by a unit, `ms`, `s`, `m` or
/// `h`: `"250ms"`, `"30s"`, `"5m"`, `"1h"`. Anything else (`"1.5h"`,
/// `"30 s"`, `"1h30m"`) is a compile error, as is every other mistake in the
/// attribute or the signature.
///
/// # What it generates
///
/// Next to the function, a unit-like type of the same name (in the type
/// namespace only, so the function stays callable) that implements
/// `jobq::Task`, with `enqueue`, `enqueue_with`, `enqueue_many` and
/// `enqueue_many_with` associated functions, and a registration that `jobq::run` finds through
/// `inventory`. The type has the fn's visibility.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}
