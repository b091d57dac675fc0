//! The window of seen `X-MS-DM-TransactionId`s behind GetBalance's 409
//! ([MP-Account] "Status codes"; the rate limit behind its 429 is a
//! [`crate::limits::RateLimiter`]). It is per process: a restart forgets
//! the window, which only matters for a repeat that straddles the restart.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
