//! Where "now" comes from. Nothing in simgate reads the system time directly, so tests and
//! integration harnesses can run card life on a clock they control.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("this server runs on the real clock; time can only be moved in simulation mode")]
    NotControllable,
    #[error("time only moves forward: {requested} is before the current time {now}")]
    Backwards {
        now: DateTime<Utc>,
        requested: DateTime<Utc>,
    },
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Moves simulated time forward by `by` and returns the new time.
    fn advance(&self, by: Duration) -> Result<DateTime<Utc>, ClockError> {
        let _ = by;
        Err(ClockError::NotControllable)
    }

    /// Moves simulated time forward to `to`.
    fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let _ = to;
        Err(ClockError::NotControllable)
    }

    /// A wait of `d` in this clock's time, for code that backs off (a carrier call's retries).
    /// A real clock waits. A [`ManualClock`] returns at once and leaves its time alone: under
    /// test a back-off costs no wall time, and the clock still moves only when the test moves
    /// it. (Advancing it here would let a worker's own back-offs push time forward for everyone
    /// sharing the clock, making retries due that the test meant to hold.)
    fn pause(&self, d: std::time::Duration) -> Pause {
        Box::pin(tokio::time::sleep(d))
    }
}

/// What [`Clock::pause`] returns.
pub type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

fn forward(now: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ClockError> {
    if to < now {
        Err(ClockError::Backwards { now, requested: to })
    } else {
        Ok(())
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, by: Duration) -> Result<DateTime<Utc>, ClockError> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        forward(*g, *g + by)?;
        *g += by;
        Ok(*g)
    }

    fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        forward(*g, to)?;
        *g = to;
        Ok(to)
    }

    fn pause(&self, _d: std::time::Duration) -> Pause {
        Box::pin(std::future::ready(()))
    }
}

/// Real time plus an offset that simulation can grow: the zero-configuration server runs on it,
/// so a harness can jump a month ahead while the service keeps ticking in between.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock(Arc<Mutex<Duration>>);

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, by: Duration) -> Result<DateTime<Utc>, ClockError> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now() + *g;
        forward(now, now + by)?;
        *g += by;
        Ok(now + by)
    }

    fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let real = Utc::now();
        forward(real + *g, to)?;
        *g = to - real;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A back-off on a manual clock does not wait and does not move the clock: a test's retries
    /// cost no wall time, and only the test moves time.
    #[tokio::test]
    async fn a_pause_on_a_manual_clock_returns_at_once_and_leaves_its_time_alone() {
        let start = DateTime::from_timestamp(0, 0).unwrap();
        let c = ManualClock::new(start);
        let wall = std::time::Instant::now();
        c.pause(std::time::Duration::from_secs(3600)).await;
        assert!(wall.elapsed() < std::time::Duration::from_secs(60));
        assert_eq!(c.now(), start);
    }

    #[test]
    fn manual_clock_clones_share_time_and_never_go_back() {
        let c = ManualClock::new(DateTime::from_timestamp(0, 0).unwrap());
        let d = c.clone();
        c.advance(Duration::days(31)).unwrap();
        assert_eq!(d.now(), DateTime::from_timestamp(31 * 86_400, 0).unwrap());
        assert!(matches!(
            d.set(DateTime::from_timestamp(5, 0).unwrap()),
            Err(ClockError::Backwards { .. })
        ));
        assert!(d.advance(Duration::seconds(-1)).is_err());
    }

    #[test]
    fn offset_clock_jumps_ahead_of_real_time() {
        let c = OffsetClock::default();
        let target = Utc::now() + Duration::days(400);
        c.set(target).unwrap();
        assert!(c.now() >= target);
        assert!(c.set(Utc::now()).is_err());
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        assert_eq!(
            SystemClock.advance(Duration::days(1)),
            Err(ClockError::NotControllable)
        );
    }
}
