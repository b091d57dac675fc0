//! The two pieces of state GetBalance keeps in memory: the rate limit
//! behind 429 (with `Retry-After`) and the window of seen
//! `X-MS-DM-TransactionId`s behind 409 (mobile-plans.md §4 "Status codes").
//! Both are per process: a restart forgets the window, which only matters
//! for a repeat that straddles the restart.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says in how many whole seconds one is there.
    pub fn take(&self) -> Result<(), u64> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), u64> {
        // A poisoned lock still holds a usable bucket.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - s.0) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// The ids seen, and the same ids oldest first with when they were seen.
type Seen = (HashSet<String>, VecDeque<(Instant, String)>);

/// The transaction ids seen in the last `window`, at most `max` of them
/// (the oldest are forgotten first).
pub struct TransactionWindow {
    window: Duration,
    max: usize,
    state: Mutex<Seen>,
}

impl TransactionWindow {
    /// An empty window.
    pub fn new(window: Duration, max: usize) -> TransactionWindow {
        TransactionWindow {
            window,
            max: max.max(1),
            state: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Records `id`; false if it was already seen in the window.
    pub fn first_time(&self, id: &str) -> bool {
        self.first_time_at(id, Instant::now())
    }

    fn first_time_at(&self, id: &str, now: Instant) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        while let Some((t, old)) = order.front() {
            if now.saturating_duration_since(*t) < self.window {
                break;
            }
            set.remove(old);
            order.pop_front();
        }
        if set.contains(id) {
            return false;
        }
        while set.len() >= self.max {
            match order.pop_front() {
                Some((_, old)) => set.remove(&old),
                None => break,
            };
        }
        set.insert(id.to_owned());
        order.push_back((now, id.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let l = RateLimiter::new(10, 2);
        let t0 = Instant::now();
        assert!(l.take_at(t0).is_ok());
        assert!(l.take_at(t0).is_ok());
        assert_eq!(l.take_at(t0), Err(1));
        assert!(l.take_at(t0 + Duration::from_millis(110)).is_ok());
        let slow = RateLimiter::new(1, 1);
        assert!(slow.take_at(t0).is_ok());
        assert_eq!(slow.take_at(t0), Err(1));
    }

    #[test]
    fn window_forgets_by_age_and_by_count() {
        let w = TransactionWindow::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(w.first_time_at("a", t0));
        assert!(!w.first_time_at("a", t0));
        assert!(w.first_time_at("b", t0));
        assert!(w.first_time_at("c", t0), "over the count: a is forgotten");
        assert!(w.first_time_at("a", t0), "b is forgotten now");
        assert!(!w.first_time_at("c", t0 + Duration::from_secs(5)));
        assert!(w.first_time_at("c", t0 + Duration::from_secs(11)));
    }
}
