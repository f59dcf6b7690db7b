//! Latency percentiles over a sliding window, in fixed memory: what
//! `INFO lake` reports as the end-to-end latency of Lake's commands.
//!
//! Invariants:
//! - A value in microseconds lands in one of [`BUCKETS`] buckets: exact
//!   below 8 µs, then four per power of two, so a reported percentile (the
//!   bucket's upper bound) is at most 25% above the true value and never
//!   below it.
//! - The window is the current minute plus the one before it (when that
//!   one is the previous minute): percentiles describe the last one to two
//!   minutes, not the process's whole life, and an idle minute leaves no
//!   stale numbers behind.
//! - Memory is two arrays of [`BUCKETS`] counters per window, whatever the
//!   load.

/// Buckets per window: enough for any `u64` of microseconds.
pub const BUCKETS: usize = 252;

/// The bucket of `us`.
pub fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as usize; // >= 3
    let top = (us >> (log - 2)) as usize; // 4..=7
    (log - 1) * 4 + (top - 4)
}

/// The largest value bucket `i` holds.
pub fn upper_bound(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let log = i / 4 + 1;
    let top = (i % 4 + 4) as u64;
    ((top + 1) << (log - 2))
        .wrapping_sub(1)
        .max(top << (log - 2))
}

/// One command's latencies over the last one to two minutes.
#[derive(Debug, Clone)]
pub struct Window {
    minute: u64,
    current: Box<[u64; BUCKETS]>,
    previous: Box<[u64; BUCKETS]>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            minute: 0,
            current: Box::new([0; BUCKETS]),
            previous: Box::new([0; BUCKETS]),
        }
    }
}

impl Window {
    /// Moves the window to `minute` (minutes since any fixed origin).
    fn rotate(&mut self, minute: u64) {
        if minute == self.minute {
            return;
        }
        if minute == self.minute + 1 {
            std::mem::swap(&mut self.previous, &mut self.current);
        } else {
            self.previous.fill(0);
        }
        self.current.fill(0);
        self.minute = minute;
    }

    /// Records one latency of `us` microseconds, at `minute`.
    pub fn record(&mut self, minute: u64, us: u64) {
        self.rotate(minute);
        self.current[bucket(us)] += 1;
    }

    /// Latencies recorded in the window as of `minute`.
    pub fn count(&mut self, minute: u64) -> u64 {
        self.rotate(minute);
        self.current.iter().chain(self.previous.iter()).sum()
    }

    /// The `q`-quantile (0..=1) of the window as of `minute`, as its
    /// bucket's upper bound in microseconds; `None` when empty.
    pub fn quantile(&mut self, minute: u64, q: f64) -> Option<u64> {
        let n = self.count(minute);
        if n == 0 {
            return None;
        }
        // The rank of the q-quantile, 1-based: at least the first.
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for i in 0..BUCKETS {
            seen += self.current[i] + self.previous[i];
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values_within_a_quarter() {
        let mut last = 0;
        for us in (0..100_000u64).chain([u32::MAX as u64, u64::MAX / 3, u64::MAX]) {
            let b = bucket(us);
            assert!(b < BUCKETS, "{us}");
            assert!(b >= last, "buckets grow with the value at {us}");
            last = b;
            let up = upper_bound(b);
            assert!(up >= us, "{us} above its bound {up}");
            assert!(us < 8 || up as f64 <= us as f64 * 1.25, "{us} -> {up}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_over_the_last_two_minutes() {
        let mut w = Window::default();
        assert_eq!(w.quantile(10, 0.5), None);
        for us in 1..=100 {
            w.record(10, us * 10);
        }
        let p50 = w.quantile(10, 0.5).unwrap();
        assert!((500..=625).contains(&p50), "{p50}");
        let p99 = w.quantile(10, 0.99).unwrap();
        assert!((990..=1237).contains(&p99), "{p99}");
        assert_eq!(w.quantile(10, 1.0), Some(upper_bound(bucket(1000))));
        // The next minute still sees them; slow ones added move the p99.
        w.record(11, 1_000_000);
        assert_eq!(w.count(11), 101);
        assert!(w.quantile(11, 0.999).unwrap() >= 1_000_000);
        // Two minutes on, the first minute is gone; an idle gap empties all.
        assert_eq!(w.count(12), 1);
        assert_eq!(w.count(20), 0);
        assert_eq!(w.quantile(20, 0.99), None);
    }
}
