//! The registry's one source of time, injected into the service, so every timestamp of a change
//! (records, audit rows, key expiry checks) comes from one place and tests can fix it.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};

pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time at the precision every backend stores (microseconds), so that what a
    /// write answers equals what a later read returns.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}
