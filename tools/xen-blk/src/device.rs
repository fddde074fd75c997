//! Finding and preparing a device of this domain, whatever its kind (`vbd`, `vif`): the attach
//! path both programs (`xen-blk`, `xen-net`) and the C ABI's Linux flavour share.
//!
//! [`prepare_attach`] resets a frontend a dead process left behind and gives the lifecycle's
//! deadlines; [`pick_unclaimed`] chooses the device when none was named; [`describe`] gives a
//! device's states for a listing; [`report_detach`] checks that a detach left nothing held.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use xen_event_channel_linux::MonotonicClock;
use xen_store::xenbus::{self, SharedClock, Timeouts, XenbusError, XenbusState};
use xen_store::{Clock, Deadline, Errno, Store as _, TxId, XsError};

use crate::services::{LinuxClock, Store};

/// Prepares an attach of `device/<kind>/<id>` over the Linux services: a frontend left behind by
/// a dead process is reset first ([`reset_stale_frontend`]); the result is the lifecycle's clock
/// (`clock` as a xenbus clock) and its deadlines, every wait for the backend (connect, a
/// reconnect, close) ending after `timeout`.
pub fn prepare_attach(
    store: &Store,
    clock: &Arc<MonotonicClock>,
    kind: &str,
    id: &str,
    timeout: Duration,
) -> Result<(SharedClock, Timeouts), XenbusError> {
    let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let clock: SharedClock = Arc::new(LinuxClock(clock.clone()));
    reset_stale_frontend(store, &*clock, kind, id, ns)?;
    Ok((
        clock,
        Timeouts {
            connect_ns: ns,
            close_ns: ns,
        },
    ))
}

/// The device of `kind` to use among `ids` (this domain's `device/<kind>/` entries) when none was
/// named: the only one whose frontend is not `Connected` (one a kernel driver or another process
/// connected is taken). Otherwise a usage message, ending with `how_to_attach` when there is none.
pub fn pick_unclaimed<S: xen_store::Store + ?Sized>(
    store: &S,
    kind: &str,
    ids: Vec<String>,
    how_to_attach: &str,
) -> Result<String, String> {
    let free: Vec<String> = ids
        .into_iter()
        .filter(|id| {
            !matches!(
                xenbus::read_state(store, TxId::NONE, &format!("device/{kind}/{id}")),
                Ok(XenbusState::Connected)
            )
        })
        .collect();
    match free.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no unclaimed {kind} in this domain (attach one, e.g. `{how_to_attach}`)"
        )),
        _ => Err(format!(
            "several {kind}s: {} (choose one with --{kind})",
            free.join(", ")
        )),
    }
}

/// Checks what a detach of `device/<kind>/<id>` left: `held` is (grant references, event
/// channels) the process still holds. With `verbose` the counts go to stderr as
/// `program: detached <kind> <id>: N grant(s), M event channel(s) still held`, followed by
/// `detail` when it is not empty (the harness reads these lines). Anything held is an error
/// (its message).
pub fn report_detach(
    program: &str,
    kind: &str,
    id: &str,
    held: (usize, usize),
    verbose: bool,
    detail: &str,
) -> Result<(), String> {
    let (grants, ports) = held;
    if verbose {
        let sep = if detail.is_empty() { "" } else { "; " };
        eprintln!(
            "{program}: detached {kind} {id}: {grants} grant(s), {ports} event channel(s) still held{sep}{detail}"
        );
    }
    if held == (0, 0) {
        Ok(())
    } else {
        Err(format!(
            "after detach {grants} grant(s) and {ports} event channel(s) are still held"
        ))
    }
}

/// A device's states for a listing; a value that cannot be read is `?` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStates {
    /// The frontend's state (`device/<kind>/<id>/state`).
    pub front: String,
    /// The backend's state.
    pub back: String,
    /// The backend's path (the frontend's `backend` key).
    pub backend: String,
}

impl fmt::Display for DeviceStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frontend={} backend={} {}",
            self.front, self.back, self.backend
        )
    }
}

/// The states of `device/<kind>/<id>` and its backend.
pub fn describe<S: xen_store::Store + ?Sized>(store: &S, kind: &str, id: &str) -> DeviceStates {
    let state = |path: &str| {
        xenbus::read_state(store, TxId::NONE, path)
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|e| format!("? ({e})"))
    };
    let node = format!("device/{kind}/{id}");
    let front = state(&node);
    let (backend, back) = match xenbus::read_backend(store, &node) {
        Ok(b) => {
            let st = state(&b.path);
            (b.path, st)
        }
        Err(e) => (format!("? ({e})"), "?".into()),
    };
    DeviceStates {
        front,
        back,
        backend,
    }
}

/// A frontend `device/<kind>/<id>` left `Connected` (or half-way) by a process that died: the
/// backend still has its ring mapped and ignores a new `Initialising`. Take the frontend through
/// `Closing` and `Closed` so that the backend disconnects (and unmaps our old pages, which the
/// kernel kept for it) and goes `Closed`; from there it accepts a new connection. Nothing to do in
/// `Initialising`, `Closed` or when the node is missing (connect reports that). Each wait ends
/// after `timeout_ns`.
pub fn reset_stale_frontend(
    store: &Store,
    clock: &dyn Clock,
    kind: &str,
    id: &str,
    timeout_ns: u64,
) -> Result<(), XenbusError> {
    let node = format!("device/{kind}/{id}");
    let xs = |e: XsError| XenbusError::Store(e);
    let state = match xenbus::read_state(store, TxId::NONE, &node) {
        Ok(s) => s,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(xs(e)),
    };
    if matches!(
        state,
        XenbusState::Initialising | XenbusState::Closed | XenbusState::Unknown
    ) {
        return Ok(());
    }
    let backend = match xenbus::read_backend(store, &node) {
        Ok(b) => b,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(xs(e)),
    };
    log::warn!(
        "{node}: frontend left in state {state:?} (a previous user died?): closing it first"
    );
    let path = xenbus::join(&backend.path, "state");
    let token = format!("xen-rs:reset:{node}");
    store.watch(&path, &token).map_err(xs)?;
    let steps = [
        (XenbusState::Closing, XenbusState::Closing),
        (XenbusState::Closed, XenbusState::Closed),
    ];
    let mut r = Ok(());
    for (ours, awaited) in steps {
        r = xenbus::switch_state(store, &node, ours)
            .map_err(XenbusError::from)
            .and_then(|()| {
                let deadline = Deadline::after(clock, timeout_ns);
                wait_backend(store, &backend.path, &token, awaited, deadline)
            });
        if r.is_err() {
            break;
        }
    }
    if let Err(e) = store.unwatch(&path, &token) {
        log::debug!("{node}: unwatch: {e}");
    }
    r
}

/// Waits, on the watch `token`, until the backend at `backend` is `awaited` (`Closing` also
/// accepts `Closed`; a vanished backend counts as closed) or `deadline` passes.
fn wait_backend(
    store: &Store,
    backend: &str,
    token: &str,
    awaited: XenbusState,
    deadline: Deadline<'_>,
) -> Result<(), XenbusError> {
    loop {
        let s = match xenbus::read_state(store, TxId::NONE, backend) {
            Ok(s) => s,
            Err(XsError::Errno(Errno::ENOENT)) => XenbusState::Unknown,
            Err(e) => return Err(e.into()),
        };
        let done = match awaited {
            XenbusState::Closing => s.is_closing() || s == XenbusState::Unknown,
            _ => s == awaited || s == XenbusState::Unknown,
        };
        if done {
            return Ok(());
        }
        if store.wait_watch_until(token, deadline)?.is_none() {
            return Err(XenbusError::Timeout {
                waiting_for: awaited,
                state_seen: s,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detach_that_left_anything_is_an_error() {
        assert_eq!(report_detach("t", "vif", "0", (0, 0), false, ""), Ok(()));
        assert_eq!(
            report_detach("t", "vbd", "51728", (3, 0), false, ""),
            Err("after detach 3 grant(s) and 0 event channel(s) are still held".into())
        );
        assert!(report_detach("t", "vbd", "51728", (0, 1), true, "x").is_err());
    }
}
