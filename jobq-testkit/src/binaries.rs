//! Finding the PostgreSQL server binaries installed on the machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::TestkitError;

/// The tools every private server needs, all from one directory.
const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A directory holding a complete set of PostgreSQL server binaries.
#[derive(Debug, Clone)]
pub(crate) struct PgBinaries {
    /// Where `initdb`, `pg_ctl` and `postgres` live (symlinks resolved,
    /// so siblings such as `psql` are here too).
    pub(crate) bin_dir: PathBuf,
    /// The major version, e.g. 16.
    pub(crate) major: u32,
}

impl PgBinaries {
    /// The path of one tool in [`Self::bin_dir`].
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The installation to use, looked up once per process: the highest
    /// version among `PATH` and `/usr/lib/postgresql/*/bin`.
    pub(crate) fn find() -> Result<&'static PgBinaries, TestkitError> {
        static FOUND: OnceLock<Option<PgBinaries>> = OnceLock::new();
        FOUND
            .get_or_init(search)
            .as_ref()
            .ok_or(TestkitError::PostgresNotInstalled)
    }
}

fn search() -> Option<PgBinaries> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    for root in [
        "/usr/lib/postgresql",
        "/usr/local/pgsql",
        "/opt/homebrew/opt",
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            dirs.extend(entries.flatten().map(|e| e.path().join("bin")));
        }
    }
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));

    let best = dirs
        .iter()
        .filter_map(|dir| candidate(dir))
        .max_by_key(|bins| bins.major);
    match &best {
        Some(bins) => {
            tracing::debug!(bin_dir = %bins.bin_dir.display(), major = bins.major, "found PostgreSQL")
        }
        None => tracing::debug!("no PostgreSQL binaries found"),
    }
    best
}

/// `dir` as an installation, if it holds all the required tools.
fn candidate(dir: &Path) -> Option<PgBinaries> {
    // Resolve symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/16/bin/initdb)
    // so that the version is visible and pg_ctl finds its `postgres` sibling.
    let initdb = std::fs::canonicalize(dir.join("initdb")).ok()?;
    let bin_dir = initdb.parent()?.to_path_buf();
    if !REQUIRED.iter().all(|tool| bin_dir.join(tool).is_file()) {
        return None;
    }
    let major = major_from_path(&bin_dir).or_else(|| major_from_version(&bin_dir))?;
    Some(PgBinaries { bin_dir, major })
}

/// `16` from `/usr/lib/postgresql/16/bin`.
fn major_from_path(bin_dir: &Path) -> Option<u32> {
    bin_dir.parent()?.file_name()?.to_str()?.parse().ok()
}

/// `16` from `pg_ctl (PostgreSQL) 16.2`.
fn major_from_version(bin_dir: &Path) -> Option<u32> {
    let output = Command::new(bin_dir.join("pg_ctl"))
        .arg("--version")
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<u32> {
    let version = text.split_whitespace().last()?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("pg_ctl (PostgreSQL) 16.2\n"), Some(16));
        assert_eq!(parse_version("pg_ctl (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_version(""), None);
        assert_eq!(
            major_from_path(Path::new("/usr/lib/postgresql/15/bin")),
            Some(15)
        );
        assert_eq!(major_from_path(Path::new("/usr/bin")), None);
    }
}
