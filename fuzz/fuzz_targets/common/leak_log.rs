//! A logger that turns the grant table's leak warnings into findings.
//!
//! `xen_grant_table` never frees a page it cannot prove unmapped: a region dropped without
//! `release` (`"GrantedPages dropped without release: leaking N pages"`), a region released to a
//! table that did not grant it, or a released region naming a reference that is not a region's.
//! Each of these leaks pages (on purpose: freeing them could hand granted memory back to the
//! allocator). A frontend must never get there, whatever its backend does, so under fuzzing each
//! message is a panic (a finding), not a log line. The grant and event-channel counts the targets
//! check cover deferred revokes; this covers the pages that would otherwise disappear silently.
//! Other log records are dropped.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct LeakCheck;

/// The grant table's messages that mean "pages leaked".
const LEAKS: [&str; 3] = [
    "dropped without release",
    "did not grant it",
    "is not a region ref",
];

impl Log for LeakCheck {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= Level::Warn && m.target().starts_with("xen_grant_table")
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        if LEAKS.iter().any(|l| msg.contains(l)) {
            panic!("grant table leak: {msg}");
        }
    }

    fn flush(&self) {}
}

/// Installs the leak check as the process's logger (once; later calls do nothing).
pub fn install() {
    static CHECK: LeakCheck = LeakCheck;
    if log::set_logger(&CHECK).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}
