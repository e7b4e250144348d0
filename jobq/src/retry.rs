//! The backoff between attempts.

use std::time::Duration;

/// Longest wait between two attempts, whatever the base and attempt.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(6 * 60 * 60);

/// Delay before the attempt after `attempt` (1-based): `base * 2^(attempt-1)`,
/// capped at [`MAX_BACKOFF`], plus up to 25% of jitter so that jobs that
/// failed together don't retry in lockstep. Never shorter than the
/// unjittered delay, so "retry after at least X" holds.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let nominal = base.saturating_mul(1u32 << exponent).min(MAX_BACKOFF);
    let jitter = nominal.mul_f64(fastrand::f64() * 0.25);
    nominal + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..=5u32 {
            let nominal = base * 2u32.pow(attempt - 1);
            for _ in 0..100 {
                let d = backoff(base, attempt);
                assert!(d >= nominal, "attempt {attempt}: {d:?} < {nominal:?}");
                assert!(
                    d <= nominal.mul_f64(1.25),
                    "attempt {attempt}: {d:?} too long"
                );
            }
        }
    }

    #[test]
    fn is_capped() {
        let d = backoff(Duration::from_secs(60), 40);
        assert!(d <= MAX_BACKOFF.mul_f64(1.25));
        assert!(d >= MAX_BACKOFF);
    }
}
