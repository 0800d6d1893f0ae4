//! Back-off for restarting crashed containers and retrying failed image pulls, as Kubernetes does it:
//! the first retry is immediate, then 10 s, doubling up to 5 minutes; a key quiet for twice the
//! longest back-off starts over.

use std::collections::HashMap;
use std::time::Duration;

/// The first back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const MAX: Duration = Duration::from_secs(300);

/// Back-off state per key (a container name, an image). Times are durations since the epoch, so
/// the runtime's own timestamps (a container's finish time) can be used.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
    initial: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: Duration,
}

impl Backoff {
    /// A back-off whose first delay is `initial` instead of [`INITIAL`].
    pub fn with_initial(initial: Duration) -> Backoff {
        Backoff {
            entries: HashMap::new(),
            initial: Some(initial),
        }
    }

    fn expired(e: &Entry, event: Duration) -> bool {
        event.saturating_sub(e.last_update) > MAX * 2
    }

    /// How long `key` must still wait after the failure at `failed_at` (zero: retry now).
    pub fn remaining(&self, key: &str, failed_at: Duration, now: Duration) -> Duration {
        match self.entries.get(key) {
            Some(e) if !Self::expired(e, failed_at) => (failed_at + e.delay).saturating_sub(now),
            _ => Duration::ZERO,
        }
    }

    /// Records a retry of `key` (after the failure at `failed_at`, at `now`): the next failure waits
    /// twice as long, or [`INITIAL`] when this is the first or the last was long ago. Returns that wait.
    pub fn retried(&mut self, key: &str, failed_at: Duration, now: Duration) -> Duration {
        let initial = self.initial.unwrap_or(INITIAL);
        let delay = match self.entries.get(key) {
            Some(e) if !Self::expired(e, failed_at) => (e.delay * 2).min(MAX),
            _ => initial,
        };
        self.entries.insert(
            key.into(),
            Entry {
                delay,
                last_update: now,
            },
        );
        delay
    }

    /// The current delay for `key` (zero when it has none).
    pub fn delay(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.delay)
    }

    /// Forgets `key` (it succeeded, or is gone).
    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn first_retry_is_immediate_then_doubles() {
        let mut b = Backoff::default();
        // First crash at t=100: restart at once.
        assert_eq!(b.remaining("c", S(100), S(100)), Duration::ZERO);
        assert_eq!(b.retried("c", S(100), S(100)), S(10));
        // Second crash at t=102: wait 10 s.
        assert_eq!(b.remaining("c", S(102), S(105)), S(7));
        assert_eq!(b.remaining("c", S(102), S(112)), Duration::ZERO);
        assert_eq!(b.retried("c", S(102), S(112)), S(20));
        assert_eq!(b.remaining("c", S(114), S(114)), S(20));
    }

    #[test]
    fn capped_and_forgotten_after_a_quiet_while() {
        let mut b = Backoff::default();
        let mut t = 0;
        for _ in 0..12 {
            b.retried("c", S(t), S(t));
            t += 100;
        }
        assert_eq!(b.delay("c"), MAX);
        let later = t + 700;
        assert_eq!(
            b.remaining("c", S(later), S(later)),
            Duration::ZERO,
            "quiet for over 10 min"
        );
        assert_eq!(b.retried("c", S(later), S(later)), INITIAL);
    }
}
