//! Simulated xenstored (owned by the xenstore helper).
