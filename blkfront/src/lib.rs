//! Xen PV block frontend (work in progress).
#![no_std]
