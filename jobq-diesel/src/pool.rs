//! The bb8 pool of `AsyncPgConnection`s.

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError as ManagerError};
use diesel_async::AsyncPgConnection;

/// A bb8 pool of diesel-async PostgreSQL connections; share your app's pool
/// with jobq or let jobq build one.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection checked out of a [`Pool`]; derefs to `AsyncPgConnection`.
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The error of checking a connection out of a [`Pool`].
pub type PoolError = bb8::RunError<ManagerError>;

/// Builds a pool of at most `max_size` connections to `url`, without
/// connecting yet: the first checkout connects.
pub fn build_pool(url: &str, max_size: u32) -> Pool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    bb8::Pool::builder()
        .max_size(max_size)
        // No ping per checkout: it would double the round trips of the hot
        // path. A connection broken by a database restart fails one
        // statement, which the caller retries, and bb8 drops it.
        .test_on_check_out(false)
        // Most recently used first: the hot path stays on a few warm
        // backends (FIFO rotated it over all of them and left the machine
        // measurably idler in a drain), and the rest can age out.
        .queue_strategy(bb8::QueueStrategy::Lifo)
        .build_unchecked(manager)
}
