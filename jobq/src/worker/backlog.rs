//! The outcomes handed to the completer and not yet written, and the
//! bound at which the fetcher stops claiming: when outcomes cannot be
//! written, a worker stops taking work instead of growing its memory.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct Backlog {
    unwritten: AtomicUsize,
    limit: usize,
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            unwritten: AtomicUsize::new(0),
            limit: limit.max(1),
        }
    }

    /// An outcome is on its way to the completer.
    pub(crate) fn add(&self) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` outcomes were written (or given up); true when that took the
    /// backlog from its bound to below it, so the fetcher may claim again.
    pub(crate) fn done(&self, n: usize) -> bool {
        let before = self.unwritten.fetch_sub(n, Ordering::AcqRel);
        before >= self.limit && before.saturating_sub(n) < self.limit
    }

    /// Unwritten outcomes, when they have reached the bound.
    pub(crate) fn full(&self) -> Option<usize> {
        let n = self.unwritten.load(Ordering::Acquire);
        (n >= self.limit).then_some(n)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_the_limit_and_done_says_when_it_drops_below() {
        let b = Backlog::new(3);
        b.add();
        b.add();
        assert_eq!(b.full(), None);
        b.add();
        assert_eq!(b.full(), Some(3));
        b.add();
        assert!(!b.done(1), "still at the bound");
        assert!(b.done(2), "from 3 to 1 crosses the bound");
        assert!(!b.done(1));
        assert_eq!(b.unwritten.load(Ordering::Acquire), 0);
    }
}
