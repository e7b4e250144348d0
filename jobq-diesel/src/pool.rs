//! The bb8 pool of `AsyncPgConnection`s.

use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError as ManagerError,
};
use diesel_async::AsyncPgConnection;
use std::time::Duration;

use crate::Connector;

/// A bb8 pool of diesel-async PostgreSQL connections; share your app's pool
/// with jobq or let jobq build one.
pub type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection checked out of a [`Pool`]; derefs to `AsyncPgConnection`.
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The error of checking a connection out of a [`Pool`].
pub type PoolError = bb8::RunError<ManagerError>;

/// Builds a pool of at most `max_size` connections made by `connector`
/// (TLS, keepalives, timeouts, the application's hook), without
/// connecting yet: the first checkout connects. Its dedicated connections
/// (`Pool::dedicated_connection`) are made the same way. A checkout waits
/// at most `checkout_timeout` for a connection.
pub fn build_pool(connector: Connector, max_size: u32, checkout_timeout: Duration) -> Pool {
    let shown = connector.options().to_string();
    let mut config = ManagerConfig::default();
    // The manager hands the callback its URL; the connector already holds
    // the parsed options, so the URL given it is the masked one, kept
    // only for diesel-async's own bookkeeping.
    config.custom_setup = Box::new(move |_masked_url| connector.connect());
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(shown, config);
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
        .connection_timeout(checkout_timeout)
        .build_unchecked(manager)
}
