//! Statements that stay prepared on their connection.
//!
//! diesel never caches a [`diesel::sql_query`] as a prepared statement,
//! since its text could be built at run time; every execution is then
//! parsed, analysed and planned anew. For the claim, which an idle worker
//! runs the moment a notification arrives, that planning was a quarter of
//! the time from an enqueue's commit to its handler's start (measured:
//! p50 0.91 → 0.66 ms once prepared). jobq's statement texts are constants,
//! so [`prepared`] tells diesel's statement cache that they are safe to
//! keep: a connection parses such a statement once, and PostgreSQL may
//! settle on a generic plan for it.
//!
//! Whether a statement should be kept is decided per statement: a generic
//! plan must be as good as the per-call ones (see the outcome statements
//! in `outcome.rs`, which are not). A connection whose statement cache is
//! disabled (`set_prepared_statement_cache_size(CacheSize::Disabled)`) runs
//! these unnamed like any other statement.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

/// A [`diesel::sql_query`] on constant SQL text, run as a cached prepared
/// statement (keyed by its text and bind types, as diesel keys every
/// statement without a static type id).
#[derive(Debug, Clone)]
#[must_use = "queries are only executed when run"]
pub(crate) struct Prepared<Q>(Q);

/// Marks `query`, whose SQL text must be a constant, as safe to keep
/// prepared.
pub(crate) fn prepared<Q>(query: Q) -> Prepared<Q> {
    Prepared(query)
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    // The one thing this wrapper changes: `sql_query` reports itself unsafe
    // to cache because its text could vary; a constant cannot.
    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    // No static id: a type id would be shared by every statement with the
    // same bind types; keyed by text, each statement keeps its own entry.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
