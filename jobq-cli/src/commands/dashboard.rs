//! `jobq dashboard`: serves jobq-web's dashboard until interrupted.

use std::time::Duration;

use crate::args::DashboardArgs;
use crate::connect::connect_ready;
use crate::error::CliError;

/// Connections the dashboard keeps: a page reads on one at a time, so a
/// few serve several operators.
const POOL_SIZE: u32 = 4;

/// How long a page waits for a connection before it shows an error.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn dashboard(url: Option<&str>, args: DashboardArgs) -> Result<(), CliError> {
    // Fails early, with the CLI's usual messages, on a wrong URL, a
    // refused login or a missing schema.
    drop(connect_ready(url).await?);
    let url = url.unwrap_or_default();
    let options = jobq::ConnectOptions::parse(url).map_err(|e| CliError::BadUrl {
        shown: e.shown,
        reason: e.reason,
    })?;
    let pool = jobq_diesel::build_pool(
        jobq_diesel::Connector::new(options),
        POOL_SIZE,
        CHECKOUT_TIMEOUT,
    );
    let mut dashboard = jobq_web::Dashboard::new(pool);
    let read_only = args.token.as_deref().is_none_or(|t| t.trim().is_empty());
    if let Some(token) = args.token {
        dashboard = dashboard.token(token);
    }
    let mut hosts = args.allow_hosts;
    if args.listen.ip().is_loopback() {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    }
    if !hosts.is_empty() {
        dashboard = dashboard.allowed_hosts(hosts);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: args.listen,
        source,
    })?;
    println!(
        "jobq dashboard on http://{addr}/ ({})",
        if read_only {
            "read-only: pass --token or set JOBQ_DASHBOARD_TOKEN to allow actions"
        } else {
            "log in with the token to retry and cancel"
        }
    );
    axum::serve(listener, dashboard.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(CliError::Serve)
}
