//! Keeping PostgreSQL's JIT compiler away from the maintenance statements.
//!
//! Heartbeat and rescue expand a worker's claimed id ranges with
//! `generate_series`, whose row estimates (1,000 per call, 100 ranges per
//! multirange) put the plans far above `jit_above_cost` although they touch
//! a few thousand rows at most. With JIT on (the default since PostgreSQL
//! 12) each run then spent over a second compiling, on both cores of a busy
//! machine. Run them in a transaction that starts with this.

/// Turns JIT off for the rest of the transaction.
pub(crate) const NO_JIT: &str = "SET LOCAL jit = off";
