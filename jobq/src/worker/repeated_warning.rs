//! A warning that a loop would repeat every pass: logged when it first
//! happens and whenever its text changes, at debug level in between, so
//! that a standing condition (a role without a privilege) is one line in
//! the log and not one line every few seconds.

#[derive(Debug, Default)]
pub(crate) struct RepeatedWarning {
    last: Option<String>,
}

impl RepeatedWarning {
    /// `message` failed this pass: whether to warn about it.
    pub(crate) fn is_new(&mut self, message: &str) -> bool {
        if self.last.as_deref() == Some(message) {
            return false;
        }
        self.last = Some(message.to_owned());
        true
    }

    /// The step succeeded: its next failure is news again.
    pub(crate) fn cleared(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_warned_once_until_it_changes_or_goes_away() {
        let mut warning = RepeatedWarning::default();
        assert!(warning.is_new("permission denied for table jobq.jobs_completed_0"));
        assert!(!warning.is_new("permission denied for table jobq.jobs_completed_0"));
        assert!(warning.is_new("canceling statement due to lock timeout"));
        assert!(!warning.is_new("canceling statement due to lock timeout"));
        warning.cleared();
        assert!(warning.is_new("canceling statement due to lock timeout"));
    }
}
