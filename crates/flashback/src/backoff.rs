//! One retry delay for every loop that waits before trying again (reconnecting to the source,
//! a full disk, the INFO poller, uploads, store operations). A hand-written `delay *= 2` in each
//! loop drifted apart (one forgot the cap, one never reset), so the policy lives here once.
//!
//! Deliberately no jitter: each agent retries against its own source and store, so there is no
//! herd to spread, and a fixed sequence keeps the tests of the loops deterministic.

use std::time::Duration;

/// A doubling delay between retries, back to its minimum once things worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay to wait now; the one after it doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Things worked: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let seen: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        // A max below the min is a caller's slip, not a reason to wait less than min.
        let mut odd = Backoff::new(ms(300), ms(10));
        assert_eq!((odd.next_delay(), odd.next_delay()), (ms(300), ms(300)));
    }
}
