//! An in-process simulated Xen (work in progress).

pub mod blkback;
pub mod netback;
pub mod xenstored;
