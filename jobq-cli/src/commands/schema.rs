//! `jobq migrate`, `jobq uninstall`, `jobq version`.

use serde::Serialize;

use crate::connect::connect;
use crate::error::CliError;
use crate::output;

#[derive(Serialize)]
struct Migrated {
    previous: Option<i64>,
    version: Option<i64>,
}

pub async fn migrate(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut conn = connect(url).await?;
    let previous = jobq::schema_version(&mut conn).await?;
    jobq::migrate(&mut conn).await?;
    let version = jobq::schema_version(&mut conn).await?;
    if json {
        output::json(&Migrated { previous, version });
    } else if previous == version {
        output::print(&format!(
            "jobq's schema is up to date (version {})\n",
            version.unwrap_or_default()
        ));
    } else {
        output::print(&format!(
            "jobq's schema {} version {}\n",
            match previous {
                None => "installed at".to_owned(),
                Some(p) => format!("upgraded from version {p} to"),
            },
            version.unwrap_or_default()
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Uninstalled {
    dropped: bool,
}

pub async fn uninstall(url: Option<&str>, yes: bool, json: bool) -> Result<(), CliError> {
    if !yes {
        return Err(CliError::Usage(
            "`jobq uninstall` drops the jobq schema with every job in it; \
             run it again with --yes to confirm"
                .into(),
        ));
    }
    let mut conn = connect(url).await?;
    let installed = jobq::schema_version(&mut conn).await?.is_some();
    jobq::uninstall(&mut conn).await?;
    if json {
        output::json(&Uninstalled { dropped: installed });
    } else if installed {
        output::print("dropped jobq's schema and every job in it\n");
    } else {
        output::print("jobq's schema was not installed; nothing dropped\n");
    }
    Ok(())
}

#[derive(Serialize)]
struct Version {
    binary: &'static str,
    schema_supported: i64,
    /// `None` when no database was given or the schema is not installed.
    schema_installed: Option<i64>,
}

/// Prints the versions; the installed schema's only when a database URL
/// is given. When that database cannot be read, the binary's versions are
/// still printed, and the error follows (exit code 1).
pub async fn version(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let installed = match url {
        Some(u) if !u.trim().is_empty() => Some(installed_version(url).await),
        _ => None,
    };
    let (installed, failure) = match installed {
        None => (None, None),
        Some(Ok(found)) => (Some(found), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let v = Version {
        binary: env!("CARGO_PKG_VERSION"),
        schema_supported: jobq::SCHEMA_VERSION,
        schema_installed: installed.flatten(),
    };
    if json {
        output::json(&v);
    } else {
        let mut text = format!(
            "jobq {}\nschema supported: {}\n",
            v.binary, v.schema_supported
        );
        text.push_str(&match (installed, &failure) {
            (_, Some(_)) => "schema installed: unknown (see the error below)\n".to_owned(),
            (None, None) => "schema installed: unknown (no database URL given)\n".to_owned(),
            (Some(None), None) => "schema installed: none (run `jobq migrate`)\n".to_owned(),
            (Some(Some(found)), None) => format!("schema installed: {found}\n"),
        });
        output::print(&text);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn installed_version(url: Option<&str>) -> Result<Option<i64>, CliError> {
    let mut conn = connect(url).await?;
    Ok(jobq::schema_version(&mut conn).await?)
}
