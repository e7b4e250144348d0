mod tasks {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Invoice {
        pub id: i64,
    }

    /// Sends an invoice; the generated type is as public as this fn.
    #[jobq::task(queue = "billing", concurrency = 2147483647)]
    pub async fn send_invoice(job: Invoice) -> Result<(), jobq::TaskError> {
        let _ = job.id;
        Ok(())
    }

    #[jobq::task]
    pub(crate) async fn crate_only(_job: Invoice) -> Result<(), jobq::TaskError> {
        Ok(())
    }
}

use jobq::Task;

fn main() {
    assert_eq!(tasks::send_invoice::NAME, "send_invoice");
    assert_eq!(tasks::send_invoice::OPTIONS.queue_name(), "billing");
    assert_eq!(tasks::send_invoice::OPTIONS.concurrency_limit(), i32::MAX as u32);
    assert_eq!(tasks::crate_only::NAME, "crate_only");
    let _task: tasks::send_invoice = tasks::send_invoice::default();
}
