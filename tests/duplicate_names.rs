//! Two tasks with the same name in one binary are refused at start-up,
//! with both definition sites named. This binary holds the duplicate on
//! purpose, so it is a test target of its own.

mod support;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Ping;

#[jobq::task(name = "billing.charge")]
async fn charge(job: Ping) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

mod legacy {
    use super::Ping;

    #[jobq::task(name = "billing.charge")]
    pub async fn old_charge(job: Ping) -> Result<(), jobq::TaskError> {
        let _ = job;
        Ok(())
    }
}

#[tokio::test]
async fn duplicate_task_names_are_refused_naming_both_sites() {
    let env = support::env().await;
    let err = env
        .worker()
        .build()
        .await
        .expect_err("duplicate names must be refused");
    let message = err.to_string();
    assert!(matches!(err, jobq::Error::DuplicateTask { .. }), "{err:?}");
    assert!(message.contains("\"billing.charge\""), "{message}");
    let sites: Vec<&str> = message.matches("duplicate_names.rs:").collect();
    assert_eq!(
        sites.len(),
        2,
        "both definition sites must be named: {message}"
    );
    // Nothing was registered or claimed.
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.workers").await, 0);
}
