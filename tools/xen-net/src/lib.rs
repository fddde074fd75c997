//! The userspace network frontend's building blocks, shared by the `xen-net` CLI and the C ABI
//! (`xen-blk-capi`'s `xennet_*` functions): attaching a vif over the Linux services
//! ([`services`]), a smoltcp interface driven with deadlines ([`stack`]), the ping and TCP
//! transfers of the CLI ([`ops`]) and the error type ([`error`]).

pub mod error;
pub mod ops;
pub mod services;
pub mod stack;

pub use error::NetCliError;
pub use stack::Stack;
