//! The request-level operations, shared by every transport that can send one request and get its
//! reply ([`Requester`]): payload building, reply parsing and the protocol's rules (unwatch
//! tolerates `ENOENT`, `E2BIG` directories are listed in parts). [`crate::XenStore`] uses them over
//! the ring page; other transports (the Linux `/dev/xen/xenbus` device, xenstored's socket) use
//! them to implement [`crate::Store`] the same way.

use crate::client::{DIRECTORY_PART_RESTARTS, MAX_DIRECTORY_BYTES, MAX_DIRECTORY_PARTS};
use crate::{wire, TxId, XsError};
use alloc::string::String;
use alloc::vec::Vec;
use xen_hypercall::abi::xs_wire::{Perm, XsdSockmsgType};
use xen_hypercall::abi::DomId;
use xen_hypercall::Errno;

/// Sends one request and returns the reply payload (an `XS_ERROR` reply as `XsError::Errno`).
pub trait Requester {
    /// Sends a request of type `ty` in transaction `tx` and waits for its reply payload.
    fn request(&self, ty: XsdSockmsgType, tx: TxId, payload: &[u8]) -> Result<Vec<u8>, XsError>;
}

/// True when `path` is `base` or below it.
pub fn at_or_under(path: &str, base: &str) -> bool {
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

fn path_request<R: Requester + ?Sized>(
    r: &R,
    ty: XsdSockmsgType,
    tx: TxId,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    wire::check_path(path)?;
    r.request(ty, tx, &wire::strings_payload(&[path])?)
}

/// `XS_READ`: the value at `path`.
pub fn read<R: Requester + ?Sized>(r: &R, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
    path_request(r, XsdSockmsgType::Read, tx, path)
}

/// `XS_WRITE`: sets the value at `path`.
pub fn write<R: Requester + ?Sized>(
    r: &R,
    tx: TxId,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    wire::parse_ok(&r.request(
        XsdSockmsgType::Write,
        tx,
        &wire::write_payload(path, value)?,
    )?)
}

/// `XS_MKDIR`: creates `path` if absent.
pub fn mkdir<R: Requester + ?Sized>(r: &R, tx: TxId, path: &str) -> Result<(), XsError> {
    wire::parse_ok(&path_request(r, XsdSockmsgType::Mkdir, tx, path)?)
}

/// `XS_RM`: removes `path` and its subtree.
pub fn rm<R: Requester + ?Sized>(r: &R, tx: TxId, path: &str) -> Result<(), XsError> {
    wire::parse_ok(&path_request(r, XsdSockmsgType::Rm, tx, path)?)
}

/// `XS_DIRECTORY`, falling back to [`directory_in_parts`] on `E2BIG`.
pub fn directory<R: Requester + ?Sized>(
    r: &R,
    tx: TxId,
    path: &str,
) -> Result<Vec<String>, XsError> {
    match path_request(r, XsdSockmsgType::Directory, tx, path) {
        Ok(reply) => wire::parse_strings(&reply),
        // Too many children for one payload: list them in parts.
        Err(XsError::Errno(Errno::E2BIG)) => directory_in_parts(r, tx, path),
        Err(e) => Err(e),
    }
}

/// `XS_DIRECTORY_PART` loop; restarts when the generation changes (at most
/// [`crate::DIRECTORY_PART_RESTARTS`] times, then `EAGAIN`). An attempt that takes more than
/// [`crate::MAX_DIRECTORY_PARTS`] parts or [`crate::MAX_DIRECTORY_BYTES`] bytes of names fails
/// with [`XsError::LimitExceeded`]: memory and round trips stay bounded whatever the daemon says.
pub fn directory_in_parts<R: Requester + ?Sized>(
    r: &R,
    tx: TxId,
    path: &str,
) -> Result<Vec<String>, XsError> {
    wire::check_path(path)?;
    let mut restarts = 0;
    'restart: loop {
        let mut names = Vec::new();
        let mut generation: Option<Vec<u8>> = None;
        let mut offset = 0usize;
        for _ in 0..MAX_DIRECTORY_PARTS {
            let off = alloc::format!("{offset}");
            let payload = wire::strings_payload(&[path, &off])?;
            let reply = r.request(XsdSockmsgType::DirectoryPart, tx, &payload)?;
            let part = wire::parse_directory_part(&reply)?;
            match &generation {
                Some(g) if *g != part.generation => {
                    restarts += 1;
                    if restarts > DIRECTORY_PART_RESTARTS {
                        return Err(XsError::Errno(Errno::EAGAIN));
                    }
                    continue 'restart;
                }
                _ => generation = Some(part.generation),
            }
            offset += part.consumed;
            if offset > MAX_DIRECTORY_BYTES {
                return Err(XsError::LimitExceeded(
                    "directory listing larger than MAX_DIRECTORY_BYTES",
                ));
            }
            names.extend(part.names);
            if part.last {
                return Ok(names);
            }
        }
        return Err(XsError::LimitExceeded(
            "directory listing in more than MAX_DIRECTORY_PARTS parts",
        ));
    }
}

/// `XS_TRANSACTION_START`.
pub fn transaction_start<R: Requester + ?Sized>(r: &R) -> Result<TxId, XsError> {
    wire::parse_tx_id(&r.request(XsdSockmsgType::TransactionStart, TxId::NONE, b"\0")?)
}

/// `XS_TRANSACTION_END`: commit (`T`) or abort (`F`).
pub fn transaction_end<R: Requester + ?Sized>(
    r: &R,
    tx: TxId,
    commit: bool,
) -> Result<(), XsError> {
    if tx == TxId::NONE {
        return Err(XsError::InvalidArgument("no transaction to end"));
    }
    let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
    wire::parse_ok(&r.request(XsdSockmsgType::TransactionEnd, tx, arg)?)
}

/// `XS_WATCH` with `token`.
pub fn watch<R: Requester + ?Sized>(r: &R, path: &str, token: &str) -> Result<(), XsError> {
    wire::check_path(path)?;
    let payload = wire::strings_payload(&[path, token])?;
    wire::parse_ok(&r.request(XsdSockmsgType::Watch, TxId::NONE, &payload)?)
}

/// `XS_UNWATCH`; `ENOENT` (no such watch) counts as done.
pub fn unwatch<R: Requester + ?Sized>(r: &R, path: &str, token: &str) -> Result<(), XsError> {
    wire::check_path(path)?;
    let payload = wire::strings_payload(&[path, token])?;
    match r.request(XsdSockmsgType::Unwatch, TxId::NONE, &payload) {
        Ok(reply) => wire::parse_ok(&reply),
        Err(XsError::Errno(Errno::ENOENT)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `XS_GET_PERMS`.
pub fn get_perms<R: Requester + ?Sized>(r: &R, tx: TxId, path: &str) -> Result<Vec<Perm>, XsError> {
    let reply = path_request(r, XsdSockmsgType::GetPerms, tx, path)?;
    wire::parse_strings(&reply)?
        .iter()
        .map(|s| Perm::parse(s).ok_or(XsError::Protocol("bad permission string")))
        .collect()
}

/// `XS_SET_PERMS`; `perms[0]` is the owner entry.
pub fn set_perms<R: Requester + ?Sized>(
    r: &R,
    tx: TxId,
    path: &str,
    perms: &[Perm],
) -> Result<(), XsError> {
    wire::check_path(path)?;
    if perms.is_empty() {
        return Err(XsError::InvalidArgument(
            "a node needs at least an owner permission",
        ));
    }
    let strs: Vec<String> = perms.iter().map(|p| alloc::format!("{p}")).collect();
    let mut parts: Vec<&str> = Vec::with_capacity(perms.len() + 1);
    parts.push(path);
    parts.extend(strs.iter().map(String::as_str));
    wire::parse_ok(&r.request(
        XsdSockmsgType::SetPerms,
        tx,
        &wire::strings_payload(&parts)?,
    )?)
}

/// `XS_GET_DOMAIN_PATH`.
pub fn get_domain_path<R: Requester + ?Sized>(r: &R, domid: DomId) -> Result<String, XsError> {
    let reply = r.request(
        XsdSockmsgType::GetDomainPath,
        TxId::NONE,
        &wire::strings_payload(&[&alloc::format!("{domid}")])?,
    )?;
    let mut v = wire::parse_strings(&reply)?;
    match (v.pop(), v.is_empty()) {
        (Some(p), true) => Ok(p),
        _ => Err(XsError::Protocol("bad domain path reply")),
    }
}
