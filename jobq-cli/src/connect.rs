//! Connecting the way jobq's workers do (TLS, keepalives and timeouts from
//! the connection string, through `jobq::ConnectOptions`), and checking
//! that the schema is there before a command relies on it.

use diesel_async::AsyncPgConnection;

use crate::error::CliError;

/// Reads the connection string and connects once. Errors name the URL with
/// its password masked and the driver's cause (which never holds it).
pub async fn connect(url: Option<&str>) -> Result<AsyncPgConnection, CliError> {
    let url = match url {
        Some(u) if !u.trim().is_empty() => u,
        _ => return Err(CliError::NoUrl),
    };
    let options = jobq::ConnectOptions::parse(url).map_err(|e| CliError::BadUrl {
        shown: e.shown,
        reason: e.reason,
    })?;
    options.connect().await.map_err(|e| {
        let reason = e.to_string();
        CliError::Connect {
            shown: options.to_string(),
            hint: hint(&reason),
            reason,
        }
    })
}

/// What to check, for the failures people meet most.
fn hint(reason: &str) -> &'static str {
    if reason.contains("password authentication failed") {
        " (check the user name and password; the password is not shown)"
    } else if reason.contains("Connection refused") || reason.contains("timed out") {
        " (is PostgreSQL running and accepting TCP connections at that host and port?)"
    } else if reason.contains("failed to lookup address") || reason.contains("Name or service") {
        " (the host name does not resolve)"
    } else {
        ""
    }
}

/// Connects and makes sure the schema is installed and not older than this
/// binary's: commands other than `migrate` read tables a newer schema may
/// have added. A newer schema is only warned about.
pub async fn connect_ready(url: Option<&str>) -> Result<AsyncPgConnection, CliError> {
    let mut conn = connect(url).await?;
    match jobq::schema_version(&mut conn).await? {
        None => return Err(CliError::NotInstalled),
        Some(found) if found < jobq::SCHEMA_VERSION => {
            return Err(CliError::SchemaOld {
                found,
                needed: jobq::SCHEMA_VERSION,
            })
        }
        Some(found) if found > jobq::SCHEMA_VERSION => eprintln!(
            "warning: the jobq schema is at version {found}, newer than the {} this jobq \
             knows; upgrade the jobq CLI",
            jobq::SCHEMA_VERSION
        ),
        Some(_) => {}
    }
    Ok(conn)
}
