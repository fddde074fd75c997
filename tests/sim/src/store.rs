//! Glue between the machine and the xenstored state machine ([`crate::xenstored`]).
//!
//! The machine pumps a domain's ring when the guest notifies its store channel, flushes queued
//! watch events to every domain after each dom0 mutation, and raises the guest's store channel
//! whenever xenstored wrote into its ring.

use crate::xenstored::Xenstored;

/// The machine's xenstored.
pub struct Store {
    /// The daemon's state machine.
    pub xs: Xenstored,
}

impl Store {
    /// A daemon with `/local/domain/0`.
    pub fn new() -> Store {
        Store {
            xs: Xenstored::new(),
        }
    }
}

impl std::ops::Deref for Store {
    type Target = Xenstored;
    fn deref(&self) -> &Xenstored {
        &self.xs
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Xenstored {
        &mut self.xs
    }
}
