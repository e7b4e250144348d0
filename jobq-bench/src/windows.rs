//! Pure arithmetic over sampled windows, shared by `soak` and `pinned`
//! and unit-tested on its own: throughput of a run's first and last
//! minute, its lowest window against the median, medians of pickup
//! latencies by phase, and how long after a release the pickup latency
//! came back.

/// Jobs finished in one sampling window, by the database clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Window start, seconds since the run's start.
    pub start_s: f64,
    /// Window end, seconds since the run's start.
    pub end_s: f64,
    /// Jobs finished within it.
    pub jobs: u64,
}

impl Window {
    /// Jobs per second within the window (0 for an empty span).
    pub fn rate(&self) -> f64 {
        let span = self.end_s - self.start_s;
        if span <= 0.0 {
            0.0
        } else {
            self.jobs as f64 / span
        }
    }
}

/// The throughput figures of a saturated run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steadiness {
    /// Jobs per second over the windows of the first `span_s` seconds.
    pub first: f64,
    /// Jobs per second over the windows of the last `span_s` seconds.
    pub last: f64,
    /// The median window's rate.
    pub median: f64,
    /// The slowest window's rate.
    pub lowest: f64,
}

impl Steadiness {
    /// Last over first (issue 16: ≥ 0.9).
    pub fn last_to_first(&self) -> f64 {
        ratio(self.last, self.first)
    }

    /// Lowest window over the median (issue 16: ≥ 0.8).
    pub fn lowest_to_median(&self) -> f64 {
        ratio(self.lowest, self.median)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Rate over a run of windows: their jobs over their combined span (so a
/// window a little longer than the others weighs accordingly).
fn pooled_rate(windows: &[Window]) -> f64 {
    let jobs: u64 = windows.iter().map(|w| w.jobs).sum();
    let span: f64 = windows.iter().map(|w| w.end_s - w.start_s).sum();
    if span > 0.0 {
        jobs as f64 / span
    } else {
        0.0
    }
}

/// Throughput figures of consecutive windows: the first and the last
/// `span_s` seconds (whole windows: from the first one on until they
/// cover `span_s`, and the same backwards from the last; a run shorter
/// than `span_s` uses all windows for both), the median and the lowest
/// window. `None` without windows.
pub fn steadiness(windows: &[Window], span_s: f64) -> Option<Steadiness> {
    if windows.is_empty() {
        return None;
    }
    let covering = |iter: &mut dyn Iterator<Item = &Window>| -> usize {
        let mut covered = 0.0;
        let mut n = 0;
        for w in iter {
            n += 1;
            covered += w.end_s - w.start_s;
            if covered >= span_s {
                break;
            }
        }
        n
    };
    let head = covering(&mut windows.iter());
    let tail = covering(&mut windows.iter().rev());
    let mut rates: Vec<f64> = windows.iter().map(Window::rate).collect();
    rates.sort_by(f64::total_cmp);
    Some(Steadiness {
        first: pooled_rate(&windows[..head]),
        last: pooled_rate(&windows[windows.len() - tail..]),
        median: median(&rates),
        lowest: rates[0],
    })
}

/// Median of sorted values (the lower middle one for an even count, as
/// a nearest-rank p50); 0 for none.
pub fn median(sorted: &[f64]) -> f64 {
    percentile(sorted, 0.5)
}

/// Nearest-rank percentile (`p` in 0..=1) of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How long after `released_s` the pickup latency was back: the end of
/// the first `bucket_s`-long bucket (by the jobs' creation time, from
/// `released_s` on) whose median is within `tolerance` × `clean_p50`.
/// `samples` are (created at, pickup latency) pairs in seconds since the
/// run's start and milliseconds. `None` if no bucket up to `until_s` is.
pub fn recovery_s(
    samples: &[(f64, f64)],
    released_s: f64,
    until_s: f64,
    bucket_s: f64,
    clean_p50: f64,
    tolerance: f64,
) -> Option<f64> {
    if bucket_s <= 0.0 {
        return None;
    }
    let mut start = released_s;
    while start < until_s {
        let end = (start + bucket_s).min(until_s);
        let mut bucket: Vec<f64> = samples
            .iter()
            .filter(|(created, _)| *created >= start && *created < end)
            .map(|&(_, latency)| latency)
            .collect();
        if !bucket.is_empty() {
            bucket.sort_by(f64::total_cmp);
            if median(&bucket) <= clean_p50 * tolerance {
                return Some(end - released_s);
            }
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(rates: &[u64]) -> Vec<Window> {
        rates
            .iter()
            .enumerate()
            .map(|(i, &jobs)| Window {
                start_s: i as f64 * 5.0,
                end_s: (i + 1) as f64 * 5.0,
                jobs: jobs * 5,
            })
            .collect()
    }

    #[test]
    fn first_and_last_minute_take_twelve_five_second_windows_each() {
        // 12 windows at 100/s, 6 at 50/s, 12 at 80/s.
        let mut rates = vec![100; 12];
        rates.extend([50; 6]);
        rates.extend([80; 12]);
        let s = steadiness(&windows(&rates), 60.0).unwrap();
        assert_eq!(s.first, 100.0);
        assert_eq!(s.last, 80.0);
        assert_eq!(s.lowest, 50.0);
        assert_eq!(s.median, 80.0);
        assert!((s.last_to_first() - 0.8).abs() < 1e-12);
        assert!((s.lowest_to_median() - 0.625).abs() < 1e-12);
    }

    #[test]
    fn a_short_run_uses_every_window_for_both_ends() {
        let s = steadiness(&windows(&[10, 30]), 60.0).unwrap();
        assert_eq!(s.first, 20.0);
        assert_eq!(s.last, 20.0);
        assert_eq!(s.last_to_first(), 1.0);
    }

    #[test]
    fn uneven_windows_are_pooled_by_their_span() {
        let w = [
            Window {
                start_s: 0.0,
                end_s: 1.0,
                jobs: 100,
            },
            Window {
                start_s: 1.0,
                end_s: 10.0,
                jobs: 900,
            },
        ];
        assert_eq!(steadiness(&w, 60.0).unwrap().first, 100.0);
    }

    #[test]
    fn no_windows_no_figures_and_zero_baselines_give_zero_ratios() {
        assert_eq!(steadiness(&[], 60.0), None);
        let s = steadiness(&windows(&[0, 0]), 60.0).unwrap();
        assert_eq!(s.last_to_first(), 0.0);
        assert_eq!(s.lowest_to_median(), 0.0);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(median(&v), 2.0);
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn recovery_is_the_end_of_the_first_bucket_back_within_tolerance() {
        // Released at 100 s; clean p50 2 ms; jobs created 100..103 s are
        // slow, 103..106 s at 2.3 ms (within 1.2x), later ones fast.
        let mut samples = Vec::new();
        for i in 0..30 {
            let t = 100.0 + i as f64 * 0.1;
            samples.push((t, 10.0));
        }
        for i in 0..30 {
            samples.push((103.0 + i as f64 * 0.1, 2.3));
        }
        samples.push((99.0, 0.1)); // before the release: ignored
        assert_eq!(recovery_s(&samples, 100.0, 120.0, 1.0, 2.0, 1.2), Some(4.0));
        assert_eq!(
            recovery_s(&samples, 100.0, 120.0, 5.0, 2.0, 1.2),
            Some(10.0)
        );
    }

    #[test]
    fn no_recovery_when_every_bucket_stays_slow() {
        let samples: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 5.0)).collect();
        assert_eq!(recovery_s(&samples, 0.0, 50.0, 5.0, 2.0, 1.2), None);
        assert_eq!(recovery_s(&samples, 0.0, 50.0, 0.0, 2.0, 1.2), None);
    }
}
