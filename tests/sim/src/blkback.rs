//! Simulated block backend (owned by the blkfront helper).
