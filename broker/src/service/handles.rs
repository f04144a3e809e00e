//! Receipt handles given back by clients (ack, change-invisible, dead-letter): an auto-renewed
//! delivery's original handle stands for its current one (see `renewal.rs`).

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::broker::Broker;
use crate::renewal::Tracked;

/// A handle from a client, resolved against the renewal table.
#[derive(Debug)]
pub struct ClientHandle {
    pub given: String,
    renewed: Option<Arc<Mutex<Tracked>>>,
}

/// The handle valid now; while it lives no renewal can replace it.
#[derive(Debug)]
pub enum CurrentHandle<'a> {
    Renewed(MutexGuard<'a, Tracked>),
    Given(&'a str),
}

impl CurrentHandle<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            CurrentHandle::Renewed(t) => &t.current,
            CurrentHandle::Given(h) => h,
        }
    }
}

impl ClientHandle {
    /// Takes the handle out of the renewal table (the client is done with renewals for it).
    pub fn resolve(b: &Broker, group: &str, given: &str) -> Self {
        ClientHandle {
            given: given.to_owned(),
            renewed: b.renewals.take(group, given),
        }
    }

    /// Locks the handle valid now and stops its renewals. Blocking callers only.
    pub fn current(&self) -> CurrentHandle<'_> {
        match &self.renewed {
            Some(entry) => {
                let mut t = entry.lock();
                t.done = true;
                CurrentHandle::Renewed(t)
            }
            None => CurrentHandle::Given(&self.given),
        }
    }
}
