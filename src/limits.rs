//! Rate limits shared by the public listeners: a token bucket, and a map of
//! token buckets by key (a client address, an EID) whose memory is bounded,
//! so that a stranger inventing keys cannot grow it without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

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
        let (tokens, at) = take(self.rate, self.burst, s.0, s.1, now);
        *s = (tokens.unwrap_or_else(|t| t), at);
        match tokens {
            Ok(_) => Ok(()),
            Err(t) => Err(wait_secs(self.rate, t)),
        }
    }
}

/// One bucket step: refill since `at`, then take a token if there is one.
/// `Ok(left)` when taken, `Err(left)` when not.
fn take(
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    now: Instant,
) -> (Result<f64, f64>, Instant) {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    let tokens = (tokens + elapsed * rate).min(burst);
    if tokens >= 1.0 {
        (Ok(tokens - 1.0), now)
    } else {
        (Err(tokens), now)
    }
}

fn wait_secs(rate: f64, tokens: f64) -> u64 {
    ((1.0 - tokens) / rate).ceil().max(1.0) as u64
}

/// A rate per minute with a burst, as configured (`per_minute` tokens a
/// minute, at most `burst` at once). `per_minute = 0` turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added a minute.
    pub per_minute: u32,
    /// Bucket size: how many may come at once.
    pub burst: u32,
}

/// Token buckets by key, each `rate` a minute with `burst`. At most
/// `max_keys` buckets are kept: when the map is full, buckets that have
/// refilled (which hold no information) are dropped first, then the least
/// recently used ones. Dropping a bucket forgives its key, so the bound is
/// set well above the number of active clients.
pub struct KeyedLimiter<K> {
    rate: Option<Rate>,
    max_keys: usize,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter with no buckets yet.
    pub fn new(rate: Rate, max_keys: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            rate: (rate.per_minute > 0).then_some(rate),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket, or says in how many whole seconds
    /// one is there.
    pub fn take(&self, key: &K) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let per_sec = f64::from(rate.per_minute) / 60.0;
        let burst = f64::from(rate.burst.max(1));
        // A poisoned lock still holds usable buckets.
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            map.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
            if map.len() >= self.max_keys {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let (tokens, at) = map.get(key).copied().unwrap_or((burst, now));
        let (taken, at) = take(per_sec, burst, tokens, at, now);
        map.insert(key.clone(), (taken.unwrap_or_else(|t| t), at));
        taken.map(|_| ()).map_err(|t| wait_secs(per_sec, t))
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn keyed_buckets_are_independent_and_refill() {
        let l = KeyedLimiter::new(
            Rate {
                per_minute: 60,
                burst: 2,
            },
            100,
        );
        let t0 = Instant::now();
        assert!(l.take_at(&"a", t0).is_ok());
        assert!(l.take_at(&"a", t0).is_ok());
        assert_eq!(l.take_at(&"a", t0), Err(1));
        assert!(
            l.take_at(&"b", t0).is_ok(),
            "another key has its own bucket"
        );
        assert!(l.take_at(&"a", t0 + Duration::from_millis(1010)).is_ok());
        assert_eq!(l.take_at(&"a", t0 + Duration::from_millis(1010)), Err(1));
    }

    #[test]
    fn keyed_map_stays_bounded() {
        let l = KeyedLimiter::new(
            Rate {
                per_minute: 1,
                burst: 1,
            },
            3,
        );
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let _ = l.take_at(&i, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(l.len() <= 3);
        // The most recent key is still limited.
        assert!(l.take_at(&999, t0 + Duration::from_millis(1000)).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let l = KeyedLimiter::new(
            Rate {
                per_minute: 0,
                burst: 0,
            },
            1,
        );
        for _ in 0..100 {
            assert!(l.take(&1u8).is_ok());
        }
        assert!(l.is_empty());
    }
}
