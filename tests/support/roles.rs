//! The least-privilege roles of docs/roles.sql, set up as written on a
//! test database: an owner that migrated the schema, a worker role and an
//! application role (unique names per run: roles are cluster-wide).

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// The three roles' names.
pub struct Roles {
    pub owner: String,
    pub worker: String,
    pub app: String,
}

impl Roles {
    /// Runs docs/roles.sql on the database at `url` (as its superuser),
    /// migrating the schema as the owner between its two steps.
    pub async fn create(url: &str) -> Roles {
        let tag = format!("r{:08x}", fastrand::u32(..));
        let roles = Roles {
            owner: format!("{tag}_owner"),
            worker: format!("{tag}_worker"),
            app: format!("{tag}_app"),
        };
        let sql = include_str!("../../docs/roles.sql")
            .replace("jobq_owner", &roles.owner)
            .replace("jobq_worker", &roles.worker)
            .replace("jobq_app", &roles.app);
        let (step1, rest) = sql.split_once("-- step 2").expect("roles.sql has a step 2");
        let step2 = format!("-- step 2{rest}");
        let mut admin = connect(url).await;
        admin.batch_execute(step1).await.expect("roles.sql step 1");
        let mut as_owner = connect(&as_user(url, &roles.owner)).await;
        jobq::migrate(&mut as_owner)
            .await
            .expect("migrate as owner");
        as_owner
            .batch_execute(&step2)
            .await
            .expect("roles.sql step 2");
        roles
    }

    /// Drops the roles and what they own, as the database's superuser
    /// (`admin`): roles outlive databases, and a shared server keeps none
    /// of them. Their sessions must be closed first.
    pub async fn drop_all(self, admin: &mut AsyncPgConnection) {
        let Roles { owner, worker, app } = self;
        // One role per DROP OWNED: with several, PostgreSQL 15 trips over a
        // default ACL that names more than one of them.
        for statement in [
            format!("REASSIGN OWNED BY \"{owner}\" TO CURRENT_USER"),
            format!("DROP OWNED BY \"{owner}\""),
            format!("DROP OWNED BY \"{worker}\""),
            format!("DROP OWNED BY \"{app}\""),
            format!("DROP ROLE \"{owner}\", \"{worker}\", \"{app}\""),
        ] {
            admin.batch_execute(&statement).await.expect(&statement);
        }
    }
}

/// `url` with its user replaced (the test servers use trust auth).
pub fn as_user(url: &str, user: &str) -> String {
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("postgres://{user}@{host}")
}

pub async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url).await.expect("connect")
}
