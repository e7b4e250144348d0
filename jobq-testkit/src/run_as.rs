//! Running PostgreSQL's tools as an unprivileged user when the tests run as root.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::TestkitError;

/// The system user PostgreSQL runs as when the tests run as root.
const POSTGRES_USER: &str = "postgres";

/// Who PostgreSQL's processes run as: ourselves, or (as root) the
/// `postgres` system user, since PostgreSQL refuses to run as root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    /// Decides for this process.
    pub(crate) fn detect() -> Result<RunAs, TestkitError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RunAs { ids: None });
        }
        let unusable = |reason: String| TestkitError::NoUnprivilegedUser {
            user: POSTGRES_USER.to_owned(),
            reason,
        };
        let user = nix::unistd::User::from_name(POSTGRES_USER)
            .map_err(|e| unusable(format!("looking it up failed: {e}")))?
            .ok_or_else(|| unusable("it does not exist".to_owned()))?;
        if user.uid.is_root() {
            return Err(unusable("it has uid 0".to_owned()));
        }
        Ok(RunAs {
            ids: Some((user.uid.as_raw(), user.gid.as_raw())),
        })
    }

    /// A command for `program` that runs as this user, in `cwd` (the
    /// unprivileged user may not be allowed into our working directory).
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(cwd);
        // Stray libpq settings from the environment must not redirect our tools.
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            command.env_remove(var);
        }
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Gives `path` to this user (a no-op when not running as root).
    pub(crate) fn give(&self, path: &Path) -> Result<(), TestkitError> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                TestkitError::io(
                    format!("giving {} to the `{POSTGRES_USER}` user", path.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }
}
