//! Commit stamps: the scores of a catalog's sorted sets.
//!
//! A stamp is integer microseconds since the Unix epoch, allocated by the
//! module at commit time under the Redis lock as
//! `max(now, newest delta + 1, newest snapshot + 1)`. The floor comes from the
//! data itself, so a clock stepping backwards (failover, NTP) can never sort a
//! write below an existing write or below a snapshot. Stamps stay exact in a
//! double up to 2^53 µs (year 2255).

/// Largest stamp that a double represents exactly.
pub const MAX_EXACT: i64 = 1 << 53;

/// The stamp for a new delta.
pub fn next(now_us: i64, newest_delta: Option<i64>, newest_snapshot: Option<i64>) -> i64 {
    let floor = |s: Option<i64>| s.map_or(i64::MIN, |s| s.saturating_add(1));
    now_us.max(floor(newest_delta)).max(floor(newest_snapshot))
}

/// Parses a score that Redis returned for a Lake sorted set.
pub fn from_score(score: f64) -> Option<i64> {
    (score.is_finite() && score.fract() == 0.0 && score.abs() <= MAX_EXACT as f64)
        .then_some(score as i64)
}

/// The current wall-clock time in microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One end of a stamp range, written as `XRANGE` writes its bounds: `-`
/// and `+` for the ends, `(` before a stamp to exclude it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub score: f64,
    pub exclusive: bool,
}

impl Bound {
    /// Parses a bound given as `what` (for the error); `-` and `+` are the
    /// lowest and highest stamps.
    pub fn parse(text: &str, what: &str) -> Result<Bound, crate::LakeError> {
        let (exclusive, num) = match text.strip_prefix('(') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let score = match num {
            "-" => f64::NEG_INFINITY,
            "+" => f64::INFINITY,
            n => n.parse::<i64>().map(|v| v as f64).map_err(|_| {
                crate::LakeError::invalid(format!(
                    "{what} needs a stamp, '-', '+' or '(<stamp>', got '{text}'"
                ))
            })?,
        };
        Ok(Bound { score, exclusive })
    }

    pub const LOWEST: Bound = Bound {
        score: f64::NEG_INFINITY,
        exclusive: false,
    };

    pub const HIGHEST: Bound = Bound {
        score: f64::INFINITY,
        exclusive: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_as_xrange_writes_them() {
        assert_eq!(Bound::parse("-", "FROM").unwrap(), Bound::LOWEST);
        assert_eq!(Bound::parse("+", "TO").unwrap(), Bound::HIGHEST);
        let b = Bound::parse("(1795684521447224", "FROM").unwrap();
        assert_eq!((b.score, b.exclusive), (1795684521447224.0, true));
        let b = Bound::parse("42", "TO").unwrap();
        assert_eq!((b.score, b.exclusive), (42.0, false));
        for bad in ["", "(", "1.5", "abc", "((1"] {
            let e = Bound::parse(bad, "FROM").unwrap_err();
            assert!(e.message.starts_with("FROM needs"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn clock_wins_when_ahead() {
        assert_eq!(next(100, Some(50), Some(60)), 100);
        assert_eq!(next(100, None, None), 100);
    }

    #[test]
    fn clock_behind_data_never_goes_backwards() {
        assert_eq!(next(100, Some(500), None), 501);
        assert_eq!(next(100, Some(500), Some(900)), 901);
        assert_eq!(next(100, None, Some(100)), 101);
        assert_eq!(next(100, Some(100), None), 101);
    }

    #[test]
    fn scores() {
        assert_eq!(from_score(12.0), Some(12));
        assert_eq!(from_score(1.5), None);
        assert_eq!(from_score(f64::INFINITY), None);
    }
}
