//! Zero-configuration PostgreSQL for jobq's tests, examples and benchmarks.
//!
//! # The zero-config rule
//!
//! * If `DATABASE_URL` is set, it wins: every [`TestDatabase`] is a fresh
//!   database created on that server (and dropped again afterwards).
//! * Otherwise a private, throwaway PostgreSQL server is started from the
//!   binaries installed on the machine (`initdb`, `pg_ctl`, `postgres` on
//!   `PATH` or under `/usr/lib/postgresql/*/bin`, highest version wins), in
//!   a temporary directory, on a free port on 127.0.0.1. It is started once
//!   per process, shared by all tests, and removed when the process exits
//!   — even when it panics or is killed (a small watchdog process takes
//!   care of that).
//! * If neither is available, [`TestkitError::PostgresNotInstalled`] says
//!   how to install PostgreSQL or set `DATABASE_URL`.
//!
//! Each test gets a database of its own, so tests run in parallel without
//! seeing each other's jobs:
//!
//! ```no_run
//! # async fn example() -> Result<(), jobq_testkit::TestkitError> {
//! let db = jobq_testkit::TestDatabase::create().await?;
//! println!("connect to {}", db.url());
//! # Ok(()) }
//! ```
//!
//! Tests that stop or restart the database use a [`PrivateServer`] of
//! their own, which is private even when `DATABASE_URL` is set.
//! [`PrivateServer::start_with_tls`] starts one with `ssl = on` and a
//! certificate the test supplies ([`ServerTls`]).
//!
//! When running as root (containers, CI), PostgreSQL is run as the
//! `postgres` system user, because it refuses to run as root.
//!
//! A private server is tuned for speed, not durability (`fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`), allows 300
//! connections, and logs to `postgres.log` next to its data directory.

mod binaries;
mod blocking;
mod connect;
mod database;
mod error;
mod private;
mod run_as;
mod server;
mod shared;
mod url;
mod watchdog;

pub use database::TestDatabase;
pub use error::TestkitError;
pub use private::PrivateServer;
pub use server::ServerTls;
