//! An in-process simulated Xen (work in progress).
