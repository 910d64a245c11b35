//! Failed-authentication rate limiting per remote address.
//!
//! A fixed window per address: after `max` failures within `window`, further attempts from that
//! address are refused until the window ends. Successful logins do not reset the count, so a
//! guesser cannot interleave a known account to keep going.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked before stale entries are swept.
const SWEEP_AT: usize = 10_000;

/// Counts failures per address.
pub struct AuthLimiter {
    /// Failures allowed per window.
    max: u32,
    /// Window length.
    window: Duration,
    /// Address → (window start, failures in it).
    state: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// A limiter allowing `max` failures per `window` per address (0 disables limiting).
    pub fn new(max: u32, window: Duration) -> AuthLimiter {
        AuthLimiter { max, window, state: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` may try to authenticate now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allowed_at(ip, Instant::now())
    }

    /// Record a failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_failure_at(ip, Instant::now())
    }

    fn allowed_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.get(&ip) {
            Some((start, n)) if now.duration_since(*start) < self.window => *n < self.max,
            _ => true,
        }
    }

    fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= SWEEP_AT {
            let window = self.window;
            state.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = state.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_recovers_after_the_window() {
        let l = AuthLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.allowed_at(ip, t0));
        l.record_failure_at(ip, t0);
        l.record_failure_at(ip, t0);
        assert!(!l.allowed_at(ip, t0 + Duration::from_secs(1)));
        assert!(l.allowed_at(other, t0), "limits are per address");
        assert!(l.allowed_at(ip, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn zero_disables() {
        let l = AuthLimiter::new(0, Duration::from_secs(60));
        let ip: IpAddr = "::1".parse().unwrap();
        l.record_failure(ip);
        assert!(l.allowed(ip));
    }
}
