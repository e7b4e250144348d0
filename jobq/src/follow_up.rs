//! [`FollowUp`]: the task `#[jobq::task(then = ...)]` names, and what
//! enqueueing its job needs, recorded on each job of the first task.
//!
//! The follow-up job itself is inserted by the database (the trigger of
//! the migration `follow_ups`), in the transaction that writes the job's
//! terminal state, whichever statement writes it.

use crate::Task;

/// The follow-up of a task: the task whose job is enqueued, with a
/// [`crate::Finished`] payload, when a job of the first task ends
/// (completed, failed or cancelled).
///
/// `#[jobq::task(then = notify_client)]` builds it from `notify_client`'s
/// name and options when it compiles; read it with
/// [`crate::TaskOptions::follow_up`]. The follow-up job takes the queue,
/// priority and attempts of its task's attribute, and its own follow-up, if
/// it has one (a chain; a cycle of follow-ups does not compile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowUp {
    task: &'static str,
    queue: &'static str,
    priority: i16,
    max_attempts: u32,
    then: Option<&'static FollowUp>,
}

impl FollowUp {
    /// The follow-up task `T`, with the options of its attribute.
    pub(crate) const fn of<T: Task>() -> Self {
        Self {
            task: T::NAME,
            queue: T::OPTIONS.queue_name(),
            priority: T::OPTIONS.default_priority(),
            max_attempts: T::OPTIONS.attempt_limit(),
            then: T::OPTIONS.follow_up(),
        }
    }

    /// The follow-up task's name.
    pub const fn task(&self) -> &'static str {
        self.task
    }

    /// The queue of the follow-up job.
    pub const fn queue(&self) -> &'static str {
        self.queue
    }

    /// The priority of the follow-up job.
    pub const fn priority(&self) -> i16 {
        self.priority
    }

    /// The attempts of the follow-up job.
    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The follow-up task's own follow-up.
    pub const fn then(&self) -> Option<&'static FollowUp> {
        self.then
    }

    /// The JSON text of the jobs table's `follow_up` column:
    /// `{"task", "queue", "priority", "max_attempts", "then"?}`, the shape
    /// `jobq.valid_follow_up` accepts.
    pub(crate) fn column_text(&self) -> String {
        self.column_value().to_string()
    }

    fn column_value(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "task": self.task,
            "queue": self.queue,
            "priority": self.priority,
            // Stored as an int4: a larger count means "no limit" anyway.
            "max_attempts": self.max_attempts.min(i32::MAX as u32),
        });
        if let Some(then) = self.then {
            value["then"] = then.column_value();
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LAST: FollowUp = FollowUp {
        task: "audit \"log\"",
        queue: "audit",
        priority: -3,
        max_attempts: u32::MAX,
        then: None,
    };

    #[test]
    fn the_column_holds_the_chain_as_nested_objects() {
        let first = FollowUp {
            task: "notify",
            queue: "default",
            priority: 0,
            max_attempts: 20,
            then: Some(&LAST),
        };
        let json: serde_json::Value = serde_json::from_str(&first.column_text()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "task": "notify", "queue": "default", "priority": 0, "max_attempts": 20,
                "then": {
                    "task": "audit \"log\"", "queue": "audit", "priority": -3,
                    "max_attempts": 2147483647
                }
            })
        );
        assert!(LAST.column_value().get("then").is_none());
    }
}
