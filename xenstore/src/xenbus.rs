//! xenbus for split drivers (`xen/io/xenbus.h`), generic over any [`Store`].
//!
//! A device has a frontend node (`device/<class>/<id>` under the guest's home) and a backend node
//! (`backend` key of the frontend node); each end publishes its [`XenbusState`] in a `state` key and
//! watches the other end's. [`frontend`] owns a frontend device's whole lifecycle (connect, close,
//! reconnect, suspend/resume) for every driver; this module has the key helpers it and the drivers
//! share. Waiting for the other end uses a watch with a deadline, never a polling loop.

use crate::{transaction, BatchOp, Store, TxId, XsError};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use xen_hypercall::abi::DomId;
use xen_hypercall::Errno;

pub mod frontend;

pub use frontend::{
    DeviceState, Link, Resume, SharedClock, Teardown, Timeouts, XenbusDriver, XenbusError,
    XenbusFrontend,
};

pub use xen_hypercall::abi::xenbus::XenbusState;

/// Joins a node path and a key (`"device/vif/0"`, `"state"` -> `"device/vif/0/state"`).
pub fn join(node: &str, key: &str) -> String {
    let node = node.trim_end_matches('/');
    if node.is_empty() {
        return key.to_string();
    }
    format!("{node}/{key}")
}

pub(crate) fn bad_value(path: &str, value: &[u8], expected: &'static str) -> XsError {
    XsError::BadValue {
        path: path.to_string(),
        value: String::from_utf8_lossy(value).into_owned(),
        expected,
    }
}

/// Reads `path` as UTF-8 text.
pub fn read_string<S: Store + ?Sized>(store: &S, tx: TxId, path: &str) -> Result<String, XsError> {
    let v = store.read(tx, path)?;
    String::from_utf8(v).map_err(|e| bad_value(path, e.as_bytes(), "UTF-8 text"))
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(value).ok()?.parse().ok()
}

/// Reads `path` as an unsigned decimal `u64` (digits only).
pub fn read_u64<S: Store + ?Sized>(store: &S, tx: TxId, path: &str) -> Result<u64, XsError> {
    let v = store.read(tx, path)?;
    parse_decimal(&v).ok_or_else(|| bad_value(path, &v, "an unsigned decimal u64"))
}

/// Reads `path` as an unsigned decimal `u32` (digits only, in range).
pub fn read_u32<S: Store + ?Sized>(store: &S, tx: TxId, path: &str) -> Result<u32, XsError> {
    let v = store.read(tx, path)?;
    parse_decimal(&v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad_value(path, &v, "an unsigned decimal u32"))
}

fn or_default<T>(r: Result<T, XsError>, default: T) -> Result<T, XsError> {
    match r {
        Err(XsError::Errno(Errno::ENOENT)) => Ok(default),
        r => r,
    }
}

/// Like [`read_u32`], with `default` when the key does not exist.
pub fn read_u32_or<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    path: &str,
    default: u32,
) -> Result<u32, XsError> {
    or_default(read_u32(store, tx, path), default)
}

/// Like [`read_u64`], with `default` when the key does not exist.
pub fn read_u64_or<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    path: &str,
    default: u64,
) -> Result<u64, XsError> {
    or_default(read_u64(store, tx, path), default)
}

/// Reads a feature flag: `"1"` is true, `"0"` false, a missing key is `default`, anything else an
/// error.
pub fn read_feature<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    path: &str,
    default: bool,
) -> Result<bool, XsError> {
    match store.read(tx, path) {
        Ok(v) => match v.as_slice() {
            b"1" => Ok(true),
            b"0" => Ok(false),
            _ => Err(bad_value(path, &v, "feature flag \"0\" or \"1\"")),
        },
        Err(XsError::Errno(Errno::ENOENT)) => Ok(default),
        Err(e) => Err(e),
    }
}

/// Reads the `state` key of `node`.
pub fn read_state<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    node: &str,
) -> Result<XenbusState, XsError> {
    let path = join(node, "state");
    let v = store.read(tx, &path)?;
    XenbusState::parse(&v).ok_or_else(|| bad_value(&path, &v, "a xenbus state 0..8"))
}

/// Where a device's backend lives, from the frontend node's `backend` and `backend-id` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The backend node (`/local/domain/0/backend/vif/1/0`).
    pub path: String,
    /// The backend's domain.
    pub domid: DomId,
}

/// Reads the backend path and domain of the frontend node `device` (e.g. `device/vif/0`).
///
/// Both keys are read in one [`Store::batch`] (one round trip).
pub fn read_backend<S: Store + ?Sized>(store: &S, device: &str) -> Result<Backend, XsError> {
    let path_key = join(device, "backend");
    let id_key = join(device, "backend-id");
    let mut replies = store
        .batch(
            TxId::NONE,
            &[BatchOp::Read(&path_key), BatchOp::Read(&id_key)],
        )
        .into_iter();
    let (Some(path), Some(id)) = (replies.next(), replies.next()) else {
        return Err(XsError::Protocol(
            "batch returned the wrong number of results",
        ));
    };
    let path =
        String::from_utf8(path?).map_err(|e| bad_value(&path_key, e.as_bytes(), "UTF-8 text"))?;
    if path.is_empty() || path.contains('\0') {
        return Err(bad_value(&path_key, path.as_bytes(), "a backend path"));
    }
    let id = id?;
    let id = parse_decimal(&id)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad_value(&id_key, &id, "an unsigned decimal u32"))?;
    let domid = DomId::try_from(id)
        .map_err(|_| bad_value(&id_key, id.to_string().as_bytes(), "a domain id"))?;
    Ok(Backend { path, domid })
}

/// Switches our end's state: writes `state` of `node` in a transaction, only if the node still
/// exists and the state differs (no needless watch events).
///
/// When the `state` key is gone the device is being torn down and nothing is written: the result
/// is `XsError::Errno(ENOENT)`.
pub fn switch_state<S: Store + ?Sized>(
    store: &S,
    node: &str,
    state: XenbusState,
) -> Result<(), XsError> {
    let path = join(node, "state");
    transaction(store, |tx| {
        let current = store.read(tx, &path)?;
        if XenbusState::parse(&current) == Some(state) {
            return Ok(());
        }
        store.write(tx, &path, state.as_str().as_bytes())
    })
}

/// Lists the device ids of class `class` under our home (`device/<class>`), in numeric order when
/// they are numbers; no such directory is an empty list.
pub fn list_devices<S: Store + ?Sized>(store: &S, class: &str) -> Result<Vec<String>, XsError> {
    let mut ids = or_default(
        store.directory(TxId::NONE, &join("device", class)),
        Vec::new(),
    )?;
    ids.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    Ok(ids)
}

/// Writes every `(key, value)` under `node` in one transaction (re-run on conflict).
pub fn write_keys<S: Store + ?Sized>(
    store: &S,
    node: &str,
    keys: &[(&str, &[u8])],
) -> Result<(), XsError> {
    transaction(store, |tx| {
        for (k, v) in keys {
            store.write(tx, &join(node, k), v)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_paths() {
        assert_eq!(join("device/vif/0", "state"), "device/vif/0/state");
        assert_eq!(join("device/vif/0/", "state"), "device/vif/0/state");
        assert_eq!(join("", "state"), "state");
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"1 ",
            b"0x10",
            b"1\0",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
