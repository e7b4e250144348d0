//! What can go wrong in the CLI, each with the action to take; and the
//! exit code each maps to.

/// A failed command. `Display` plus the source chain is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no database URL: pass --database-url or set DATABASE_URL")]
    NoUrl,
    #[error("invalid database URL {shown}: {reason}")]
    BadUrl { shown: String, reason: String },
    #[error("cannot connect to the database at {shown}: {reason}{hint}")]
    Connect {
        shown: String,
        reason: String,
        hint: &'static str,
    },
    #[error("jobq's schema is not installed; run `jobq migrate`")]
    NotInstalled,
    #[error(
        "jobq's schema is at version {found}, older than the {needed} this jobq needs; \
         run `jobq migrate`"
    )]
    SchemaOld { found: i64, needed: i64 },
    /// The command line was wrong in a way clap cannot see (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("no job {0} (never enqueued, or finished and pruned after its retention)")]
    NoJob(i64),
    /// A schedule name no worker has declared.
    #[error("no schedule named {0:?} (a schedule exists once a worker declaring it has started)")]
    NoSchedule(String),
    /// Some of the jobs named could not be acted on; each was reported.
    #[error("{0}")]
    Partial(String),
    #[error("invalid JSON payload: {0}")]
    Payload(serde_json::Error),
    #[error(transparent)]
    Jobq(#[from] jobq::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the dashboard's server stopped: {0}")]
    Serve(std::io::Error),
}

impl CliError {
    /// 2 for usage errors, as clap uses; 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The error and its causes on one line: jobq's errors keep the context on
/// top and the database's message in the source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.ends_with(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out
}
