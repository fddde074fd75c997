//! Simulated network backend (owned by the netfront helper).
