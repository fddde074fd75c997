//! The queue of received watch events, bounded per token and in total.
//!
//! xenstored may send events faster than a watcher takes them (a busy subtree, or a hostile
//! daemon flooding). The queue keeps arrival order, coalesces an event equal to one already queued
//! (a watcher re-reads the state anyway), and drops what exceeds
//! [`MAX_QUEUED_WATCH_EVENTS_PER_TOKEN`] for one token or [`MAX_QUEUED_WATCH_EVENTS`] in total,
//! counting every drop ([`WatchQueue::dropped`]): one flooding watch cannot starve the others of
//! queue space, and memory stays bounded whatever the daemon sends.

use crate::WatchEvent;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;

/// Most watch events queued at once, over all tokens.
pub const MAX_QUEUED_WATCH_EVENTS: usize = 1024;

/// Most watch events queued at once for one token.
pub const MAX_QUEUED_WATCH_EVENTS_PER_TOKEN: usize = 128;

/// Received watch events not yet taken (see the module docs).
#[derive(Debug, Default)]
pub struct WatchQueue {
    events: VecDeque<WatchEvent>,
    /// Events queued per token (tokens with none queued have no entry, so the map is bounded
    /// by the queue).
    per_token: BTreeMap<String, usize>,
    dropped: u64,
}

impl WatchQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `ev` unless an equal event is queued (coalesced) or a bound is reached (dropped and
    /// counted). Returns whether it was queued.
    pub fn push(&mut self, ev: WatchEvent) -> bool {
        let n = self.per_token.get(&ev.token).copied().unwrap_or(0);
        if n > 0 && self.events.contains(&ev) {
            return false;
        }
        if n >= MAX_QUEUED_WATCH_EVENTS_PER_TOKEN || self.events.len() >= MAX_QUEUED_WATCH_EVENTS {
            self.dropped += 1;
            // Log the first drop and then every 1024th, not each one of a flood.
            if self.dropped % 1024 == 1 {
                log::warn!(
                    "xenstore: watch event queue full for token {:?}: {} event(s) dropped so far",
                    ev.token,
                    self.dropped
                );
            }
            return false;
        }
        *self.per_token.entry(ev.token.clone()).or_insert(0) += 1;
        self.events.push_back(ev);
        true
    }

    fn taken(&mut self, ev: &WatchEvent) {
        if let Some(n) = self.per_token.get_mut(&ev.token) {
            *n -= 1;
            if *n == 0 {
                self.per_token.remove(&ev.token);
            }
        }
    }

    /// Takes the oldest event.
    pub fn pop_front(&mut self) -> Option<WatchEvent> {
        let ev = self.events.pop_front()?;
        self.taken(&ev);
        Some(ev)
    }

    /// Takes the oldest event of `token`.
    pub fn take_for(&mut self, token: &str) -> Option<WatchEvent> {
        if !self.per_token.contains_key(token) {
            return None;
        }
        let i = self.events.iter().position(|e| e.token == token)?;
        let ev = self.events.remove(i)?;
        self.taken(&ev);
        Some(ev)
    }

    /// Removes every queued event for which `f` is true.
    pub fn remove_where(&mut self, mut f: impl FnMut(&WatchEvent) -> bool) {
        let mut kept = VecDeque::with_capacity(self.events.len());
        for ev in core::mem::take(&mut self.events) {
            if f(&ev) {
                self.taken(&ev);
            } else {
                kept.push_back(ev);
            }
        }
        self.events = kept;
    }

    /// Forgets every queued event (the drop count stays).
    pub fn clear(&mut self) {
        self.events.clear();
        self.per_token.clear();
    }

    /// Events queued.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is queued.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events dropped so far because a bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn ev(path: &str, token: &str) -> WatchEvent {
        WatchEvent {
            path: path.into(),
            token: token.into(),
        }
    }

    #[test]
    fn bounded_per_token_and_in_total_with_counted_drops() {
        let mut q = WatchQueue::new();
        for i in 0..MAX_QUEUED_WATCH_EVENTS_PER_TOKEN + 10 {
            q.push(ev(&format!("p/{i}"), "flood"));
        }
        assert_eq!(q.len(), MAX_QUEUED_WATCH_EVENTS_PER_TOKEN);
        assert_eq!(q.dropped(), 10);
        // Another token still gets room.
        assert!(q.push(ev("a", "quiet")));
        assert_eq!(q.take_for("quiet"), Some(ev("a", "quiet")));
        // The total bound holds over many tokens.
        for t in 0..100 {
            for i in 0..MAX_QUEUED_WATCH_EVENTS_PER_TOKEN {
                q.push(ev(&format!("p/{i}"), &format!("t{t}")));
            }
        }
        assert_eq!(q.len(), MAX_QUEUED_WATCH_EVENTS);
        assert!(q.per_token.len() <= MAX_QUEUED_WATCH_EVENTS);
        // Taking events frees room for their token.
        assert_eq!(q.pop_front(), Some(ev("p/0", "flood")));
        assert!(q.push(ev("again", "flood")));
    }

    #[test]
    fn duplicates_coalesce_and_removal_keeps_counts() {
        let mut q = WatchQueue::new();
        assert!(q.push(ev("a", "t")));
        assert!(!q.push(ev("a", "t")));
        assert!(q.push(ev("b", "t")));
        assert!(q.push(ev("a", "u")));
        assert_eq!(q.dropped(), 0);
        q.remove_where(|e| e.token == "t");
        assert_eq!(q.len(), 1);
        assert!(!q.per_token.contains_key("t"));
        assert_eq!(q.take_for("t"), None);
        assert_eq!(q.pop_front(), Some(ev("a", "u")));
        assert!(q.is_empty() && q.per_token.is_empty());
    }
}
