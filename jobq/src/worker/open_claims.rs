//! The jobs of each claim whose outcome is not written yet. A claim's row
//! holds its jobs for this worker (heartbeats and rescue find them
//! through it), so it goes with the outcome of its last job.

use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap;

#[derive(Debug, Default)]
pub(crate) struct OpenClaims {
    open: Mutex<FxHashMap<i64, u32>>,
}

impl OpenClaims {
    fn lock(&self) -> MutexGuard<'_, FxHashMap<i64, u32>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `jobs` more jobs of `claim` as open.
    pub(crate) fn open(&self, claim: i64, jobs: u32) {
        *self.lock().entry(claim).or_default() += jobs;
    }

    /// One job of `claim` is settled; true when it was the claim's last.
    pub(crate) fn settle(&self, claim: i64) -> bool {
        let mut open = self.lock();
        match open.get_mut(&claim) {
            Some(left) if *left > 1 => {
                *left -= 1;
                false
            }
            Some(_) => {
                open.remove(&claim);
                true
            }
            None => false,
        }
    }

    /// Forgets claims whose rows are gone.
    pub(crate) fn forget(&self, claims: &[i64]) {
        let mut open = self.lock();
        for claim in claims {
            open.remove(claim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_settled_job_settles_the_claim_once() {
        let claims = OpenClaims::default();
        claims.open(7, 2);
        claims.open(7, 1);
        assert!(!claims.settle(7));
        assert!(!claims.settle(7));
        assert!(claims.settle(7));
        assert!(!claims.settle(7), "already settled");
        claims.open(8, 5);
        claims.forget(&[8]);
        assert!(!claims.settle(8));
    }
}
