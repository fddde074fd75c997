//! Typed wrappers over [`Hypercall::hypercall`].
//!
//! [`HypercallExt`] is implemented for every [`Hypercall`]; bring it into scope with
//! `use xen_hypercall::HypercallExt;`. Each method encodes one operation exactly as the C ABI
//! expects (command in the first argument, a pointer to the argument struct in the second, ...) and
//! maps negative returns to [`Errno`].
//!
//! Wrappers whose arguments are borrowed Rust values are safe: the borrow guarantees the memory is
//! valid for the call. Wrappers are `unsafe` where the effect of the call outlives it or changes the
//! guest's memory map (Xen writes to a registered page later; a frame is replaced or released),
//! and the generic raw forms for event-channel and grant-table commands are `unsafe` because the
//! argument type is not checked against the command.

use crate::abi::hvm::{XenHvmParam, HVMOP_GET_PARAM, HVMOP_SET_PARAM};
use crate::abi::memory::{
    E820Entry, XenAddToPhysmap, XenMemoryMap, XenMemoryReservation, XENMEM_ADD_TO_PHYSMAP,
    XENMEM_DECREASE_RESERVATION, XENMEM_MEMORY_MAP, XENMEM_POPULATE_PHYSMAP,
};
use crate::abi::sched::{
    SchedPoll, SchedShutdown, SchedWatchdog, ShutdownReason, SCHEDOP_BLOCK, SCHEDOP_POLL,
    SCHEDOP_SHUTDOWN, SCHEDOP_WATCHDOG, SCHEDOP_YIELD,
};
use crate::abi::vcpu::{
    VcpuRegisterVcpuInfo, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer, VCPUOP_REGISTER_VCPU_INFO,
    VCPUOP_SET_PERIODIC_TIMER, VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_PERIODIC_TIMER,
    VCPUOP_STOP_SINGLESHOT_TIMER,
};
use crate::abi::version::{
    XenCapabilitiesInfo, XenExtraversion, XenFeatureInfo, XenVersion, XENVER_CAPABILITIES,
    XENVER_EXTRAVERSION, XENVER_GET_FEATURES, XENVER_VERSION,
};
use crate::abi::{console::CONSOLEIO_WRITE, DomId, EvtchnPort, XenPfn, DOMID_SELF};
use crate::{op, Errno, Hypercall};

/// Address of a value Xen only reads, as a hypercall argument.
fn addr<T: ?Sized>(p: *const T) -> u64 {
    p.cast::<u8>() as usize as u64
}

/// Address of a value Xen may write, as a hypercall argument (keeps write provenance).
fn addr_mut<T: ?Sized>(p: *mut T) -> u64 {
    p.cast::<u8>() as usize as u64
}

/// What `SCHEDOP_shutdown` with `SHUTDOWN_suspend` reported when it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendOutcome {
    /// The domain was saved and resumed (possibly on another host): reconnect devices.
    Resumed,
    /// The suspend was cancelled; the domain continues where it was (return value 1).
    Cancelled,
}

/// Typed hypercall wrappers, implemented for every [`Hypercall`].
pub trait HypercallExt: Hypercall {
    // ----- xen_version -----

    /// `XENVER_version`: the hypervisor's major and minor version.
    fn xen_version(&self) -> Result<XenVersion, Errno> {
        // SAFETY: XENVER_version takes no pointer argument (NULL).
        let r = Errno::check(unsafe {
            self.hypercall(op::XEN_VERSION, [XENVER_VERSION as u64, 0, 0, 0, 0])
        })?;
        Ok(XenVersion::from_raw(r as u32))
    }

    /// `XENVER_extraversion`: the version suffix (e.g. `".0"`).
    fn xen_extraversion(&self) -> Result<XenExtraversion, Errno> {
        let mut buf = XenExtraversion::zeroed();
        // SAFETY: `buf` is a live 16-byte xen_extraversion_t that Xen fills.
        Errno::check(unsafe {
            self.hypercall(
                op::XEN_VERSION,
                [XENVER_EXTRAVERSION as u64, addr_mut(&mut buf), 0, 0, 0],
            )
        })?;
        Ok(buf)
    }

    /// `XENVER_capabilities`: the capability string (e.g. `"xen-3.0-x86_64 hvm-3.0-x86_64"`).
    fn xen_capabilities(&self) -> Result<XenCapabilitiesInfo, Errno> {
        let mut buf = XenCapabilitiesInfo::zeroed();
        // SAFETY: `buf` is a live 1024-byte xen_capabilities_info_t that Xen fills.
        Errno::check(unsafe {
            self.hypercall(
                op::XEN_VERSION,
                [XENVER_CAPABILITIES as u64, addr_mut(&mut buf), 0, 0, 0],
            )
        })?;
        Ok(buf)
    }

    /// `XENVER_get_features`: the 32-bit feature submap `submap_idx` (`XENFEAT_*` bits).
    fn xen_features(&self, submap_idx: u32) -> Result<u32, Errno> {
        let mut info = XenFeatureInfo {
            submap_idx,
            submap: 0,
        };
        // SAFETY: `info` is a live xen_feature_info for the duration of the call.
        Errno::check(unsafe {
            self.hypercall(
                op::XEN_VERSION,
                [XENVER_GET_FEATURES as u64, addr_mut(&mut info), 0, 0, 0],
            )
        })?;
        Ok(info.submap)
    }

    /// Whether feature `XENFEAT_*` number `feature` is set.
    fn xen_has_feature(&self, feature: u32) -> Result<bool, Errno> {
        let map = self.xen_features(feature / 32)?;
        Ok(map & (1 << (feature % 32)) != 0)
    }

    // ----- console_io -----

    /// `CONSOLEIO_write`: writes `bytes` to Xen's console (dom0, or domUs on debug builds of Xen;
    /// release builds return an error or drop the output for domUs).
    fn console_write(&self, bytes: &[u8]) -> Result<(), Errno> {
        for chunk in bytes.chunks(u32::MAX as usize) {
            // SAFETY: `chunk` is readable for its length for the duration of the call.
            Errno::check(unsafe {
                self.hypercall(
                    op::CONSOLE_IO,
                    [
                        CONSOLEIO_WRITE as u64,
                        chunk.len() as u64,
                        addr(chunk.as_ptr()),
                        0,
                        0,
                    ],
                )
            })?;
        }
        Ok(())
    }

    // ----- sched_op -----

    /// `SCHEDOP_yield`: gives up the CPU while staying runnable.
    fn sched_yield(&self) -> Result<(), Errno> {
        // SAFETY: SCHEDOP_yield takes no pointer argument.
        Errno::check(unsafe { self.hypercall(op::SCHED_OP, [SCHEDOP_YIELD as u64, 0, 0, 0, 0]) })?;
        Ok(())
    }

    /// `SCHEDOP_block`: sleeps until an event is pending for this vCPU (or returns at once if one is).
    ///
    /// Event delivery must be enabled (PV: upcall mask clear; HVM: interrupts are re-enabled by Xen's
    /// check), otherwise the vCPU is not woken by the event.
    fn sched_block(&self) -> Result<(), Errno> {
        // SAFETY: SCHEDOP_block takes no pointer argument.
        Errno::check(unsafe { self.hypercall(op::SCHED_OP, [SCHEDOP_BLOCK as u64, 0, 0, 0, 0]) })?;
        Ok(())
    }

    /// `SCHEDOP_poll`: blocks until one of `ports` is pending or system time reaches
    /// `timeout_abs_ns` (0: no timeout). Works with event delivery masked.
    fn sched_poll(&self, ports: &[EvtchnPort], timeout_abs_ns: u64) -> Result<(), Errno> {
        let nr_ports = u32::try_from(ports.len()).map_err(|_| Errno::EINVAL)?;
        let mut poll = SchedPoll {
            ports: addr(ports.as_ptr()),
            nr_ports,
            pad: 0,
            timeout: timeout_abs_ns,
        };
        // SAFETY: `poll` and the `ports` array it points to are live for the call; Xen only reads them.
        Errno::check(unsafe {
            self.hypercall(
                op::SCHED_OP,
                [SCHEDOP_POLL as u64, addr_mut(&mut poll), 0, 0, 0],
            )
        })?;
        Ok(())
    }

    /// `SCHEDOP_shutdown` with `reason`; returns Xen's non-negative result.
    ///
    /// For every reason but [`ShutdownReason::Suspend`] the call does not return on success. For a
    /// suspend of a PVH/HVM guest it returns when the domain resumes (see [`Self::sched_suspend`]).
    fn sched_shutdown(&self, reason: ShutdownReason) -> Result<u64, Errno> {
        let mut arg = SchedShutdown {
            reason: reason.to_raw(),
        };
        // SAFETY: `arg` is a live sched_shutdown for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::SCHED_OP,
                [SCHEDOP_SHUTDOWN as u64, addr_mut(&mut arg), 0, 0, 0],
            )
        })
    }

    /// `SCHEDOP_shutdown` with `SHUTDOWN_suspend`. A classic PV guest passes the machine frame of
    /// its `start_info` page as `pv_start_info_mfn` (the third argument); PVH/HVM guests pass
    /// `None`. Returns how the domain came back.
    fn sched_suspend(&self, pv_start_info_mfn: Option<XenPfn>) -> Result<SuspendOutcome, Errno> {
        let mut arg = SchedShutdown {
            reason: ShutdownReason::Suspend.to_raw(),
        };
        let mfn = pv_start_info_mfn.unwrap_or(0);
        // SAFETY: `arg` is a live sched_shutdown for the call; the mfn is passed by value.
        let r = Errno::check(unsafe {
            self.hypercall(
                op::SCHED_OP,
                [SCHEDOP_SHUTDOWN as u64, addr_mut(&mut arg), mfn, 0, 0],
            )
        })?;
        Ok(if r == 0 {
            SuspendOutcome::Resumed
        } else {
            SuspendOutcome::Cancelled
        })
    }

    /// `SCHEDOP_watchdog`: with `id` 0 creates a watchdog and returns its id; with a non-zero `id`
    /// re-arms it to `timeout_s` seconds, or destroys it when `timeout_s` is 0 (returning 0).
    fn sched_watchdog(&self, id: u32, timeout_s: u32) -> Result<u32, Errno> {
        let mut arg = SchedWatchdog {
            id,
            timeout: timeout_s,
        };
        // SAFETY: `arg` is a live sched_watchdog for the call.
        let r = Errno::check(unsafe {
            self.hypercall(
                op::SCHED_OP,
                [SCHEDOP_WATCHDOG as u64, addr_mut(&mut arg), 0, 0, 0],
            )
        })?;
        Ok(r as u32)
    }

    // ----- event_channel_op / grant_table_op (generic raw forms) -----

    /// `HYPERVISOR_event_channel_op(cmd, arg)`.
    ///
    /// # Safety
    ///
    /// `arg` must point to a live value of the `struct evtchn_*` type that `cmd` expects (or be
    /// null where `cmd` takes none), valid for Xen's reads and writes during the call.
    unsafe fn event_channel_op<T>(&self, cmd: u32, arg: *mut T) -> Result<u64, Errno> {
        // SAFETY: the caller guarantees `arg` matches `cmd`.
        Errno::check(unsafe {
            self.hypercall(op::EVENT_CHANNEL_OP, [cmd as u64, addr_mut(arg), 0, 0, 0])
        })
    }

    /// `HYPERVISOR_grant_table_op(cmd, arg, count)`.
    ///
    /// # Safety
    ///
    /// `arg` must point to `count` live values of the `struct gnttab_*` type that `cmd` expects,
    /// valid for Xen's reads and writes during the call; operations that map or transfer frames must
    /// not invalidate memory Rust still references.
    unsafe fn grant_table_op<T>(&self, cmd: u32, arg: *mut T, count: u32) -> Result<u64, Errno> {
        // SAFETY: the caller guarantees `arg` matches `cmd` and `count`.
        Errno::check(unsafe {
            self.hypercall(
                op::GRANT_TABLE_OP,
                [cmd as u64, addr_mut(arg), count as u64, 0, 0],
            )
        })
    }

    // ----- memory_op -----

    /// `XENMEM_add_to_physmap`: maps the page `xatp` describes (shared_info, a grant frame, ...)
    /// at guest frame `xatp.gpfn`.
    ///
    /// # Safety
    ///
    /// Whatever backed `xatp.gpfn` before is replaced: no Rust reference may point into that frame
    /// unless the caller intends to see Xen's page there (e.g. a page set aside for the mapping).
    unsafe fn add_to_physmap(&self, xatp: &mut XenAddToPhysmap) -> Result<(), Errno> {
        // SAFETY: `xatp` is live; the memory-map effect is the caller's responsibility.
        Errno::check(unsafe {
            self.hypercall(
                op::MEMORY_OP,
                [XENMEM_ADD_TO_PHYSMAP as u64, addr_mut(xatp), 0, 0, 0],
            )
        })?;
        Ok(())
    }

    /// `XENMEM_populate_physmap` for `DOMID_SELF`: backs the guest frames in `frames` (each the
    /// first of `2^extent_order` pages) with memory. Returns how many extents were populated (a
    /// short count is not an error).
    ///
    /// # Safety
    ///
    /// The frames must be ones the guest does not use for anything Rust references (normally
    /// unpopulated frames, e.g. released earlier by [`Self::decrease_reservation`]).
    unsafe fn populate_physmap(
        &self,
        extent_order: u32,
        frames: &mut [XenPfn],
    ) -> Result<usize, Errno> {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            reservation_op(
                self,
                XENMEM_POPULATE_PHYSMAP,
                DOMID_SELF,
                extent_order,
                frames,
            )
        }
    }

    /// `XENMEM_decrease_reservation` for `DOMID_SELF`: gives the extents starting at `frames` back
    /// to Xen (e.g. a balloon). Returns how many extents were released.
    ///
    /// # Safety
    ///
    /// The frames are unmapped from the guest: nothing may reference their memory afterwards.
    unsafe fn decrease_reservation(
        &self,
        extent_order: u32,
        frames: &mut [XenPfn],
    ) -> Result<usize, Errno> {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            reservation_op(
                self,
                XENMEM_DECREASE_RESERVATION,
                DOMID_SELF,
                extent_order,
                frames,
            )
        }
    }

    /// `XENMEM_memory_map`: fills `entries` with this domain's e820 map and returns how many
    /// entries Xen wrote (never more than `entries.len()`).
    fn memory_map(&self, entries: &mut [E820Entry]) -> Result<usize, Errno> {
        let nr_entries = u32::try_from(entries.len()).map_err(|_| Errno::EINVAL)?;
        let mut map = XenMemoryMap {
            nr_entries,
            pad: 0,
            buffer: addr_mut(entries.as_mut_ptr()),
        };
        // SAFETY: `map` and the `entries` buffer it describes are live and writable for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::MEMORY_OP,
                [XENMEM_MEMORY_MAP as u64, addr_mut(&mut map), 0, 0, 0],
            )
        })?;
        // Never trust the count beyond the buffer we offered.
        Ok((map.nr_entries as usize).min(entries.len()))
    }

    // ----- hvm_op -----

    /// `HVMOP_get_param` for `DOMID_SELF`: the value of `HVM_PARAM_*` `index`.
    fn hvm_get_param(&self, index: u32) -> Result<u64, Errno> {
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value: 0,
        };
        // SAFETY: `p` is a live xen_hvm_param for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::HVM_OP,
                [HVMOP_GET_PARAM as u64, addr_mut(&mut p), 0, 0, 0],
            )
        })?;
        Ok(p.value)
    }

    /// `HVMOP_set_param` for `DOMID_SELF`: sets `HVM_PARAM_*` `index` to `value` (e.g. the
    /// callback vector, see [`crate::abi::hvm::callback_via_vector`]).
    fn hvm_set_param(&self, index: u32, value: u64) -> Result<(), Errno> {
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value,
        };
        // SAFETY: `p` is a live xen_hvm_param for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::HVM_OP,
                [HVMOP_SET_PARAM as u64, addr_mut(&mut p), 0, 0, 0],
            )
        })?;
        Ok(())
    }

    // ----- vcpu_op -----

    /// `VCPUOP_set_singleshot_timer`: fire `VIRQ_TIMER` on `vcpu` at system time `timeout_abs_ns`.
    /// With `flags` = `VCPU_SSHOTTMR_future`, a time in the past fails with `ETIME`.
    fn vcpu_set_singleshot_timer(
        &self,
        vcpu: u32,
        timeout_abs_ns: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        let mut t = VcpuSetSingleshotTimer {
            timeout_abs_ns,
            flags,
            pad: 0,
        };
        // SAFETY: `t` is a live vcpu_set_singleshot_timer for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::VCPU_OP,
                [
                    VCPUOP_SET_SINGLESHOT_TIMER as u64,
                    vcpu as u64,
                    addr_mut(&mut t),
                    0,
                    0,
                ],
            )
        })?;
        Ok(())
    }

    /// `VCPUOP_stop_singleshot_timer`.
    fn vcpu_stop_singleshot_timer(&self, vcpu: u32) -> Result<(), Errno> {
        // SAFETY: the command takes no pointer argument.
        Errno::check(unsafe {
            self.hypercall(
                op::VCPU_OP,
                [VCPUOP_STOP_SINGLESHOT_TIMER as u64, vcpu as u64, 0, 0, 0],
            )
        })?;
        Ok(())
    }

    /// `VCPUOP_set_periodic_timer`: a periodic `VIRQ_TIMER` every `period_ns`.
    fn vcpu_set_periodic_timer(&self, vcpu: u32, period_ns: u64) -> Result<(), Errno> {
        let mut t = VcpuSetPeriodicTimer { period_ns };
        // SAFETY: `t` is a live vcpu_set_periodic_timer for the call.
        Errno::check(unsafe {
            self.hypercall(
                op::VCPU_OP,
                [
                    VCPUOP_SET_PERIODIC_TIMER as u64,
                    vcpu as u64,
                    addr_mut(&mut t),
                    0,
                    0,
                ],
            )
        })?;
        Ok(())
    }

    /// `VCPUOP_stop_periodic_timer` (PV guests start with a periodic timer; tickless guests stop it).
    fn vcpu_stop_periodic_timer(&self, vcpu: u32) -> Result<(), Errno> {
        // SAFETY: the command takes no pointer argument.
        Errno::check(unsafe {
            self.hypercall(
                op::VCPU_OP,
                [VCPUOP_STOP_PERIODIC_TIMER as u64, vcpu as u64, 0, 0, 0],
            )
        })?;
        Ok(())
    }

    /// `VCPUOP_register_vcpu_info`: from now on Xen keeps `vcpu`'s `vcpu_info` at byte
    /// `info.offset` of frame `info.mfn` instead of in shared_info.
    ///
    /// # Safety
    ///
    /// The 64-byte area must stay reserved for Xen for the rest of the domain's life (Xen writes to
    /// it asynchronously); it must not cross a page boundary.
    unsafe fn vcpu_register_vcpu_info(
        &self,
        vcpu: u32,
        info: &VcpuRegisterVcpuInfo,
    ) -> Result<(), Errno> {
        let mut arg = *info;
        // SAFETY: `arg` is live for the call; the lifetime of the area is the caller's guarantee.
        Errno::check(unsafe {
            self.hypercall(
                op::VCPU_OP,
                [
                    VCPUOP_REGISTER_VCPU_INFO as u64,
                    vcpu as u64,
                    addr_mut(&mut arg),
                    0,
                    0,
                ],
            )
        })?;
        Ok(())
    }

    // ----- set_timer_op -----

    /// `HYPERVISOR_set_timer_op`: one-shot timer for the current vCPU at system time
    /// `timeout_abs_ns` (0 cancels).
    fn set_timer_op(&self, timeout_abs_ns: u64) -> Result<(), Errno> {
        // SAFETY: the call takes no pointer argument.
        Errno::check(unsafe { self.hypercall(op::SET_TIMER_OP, [timeout_abs_ns, 0, 0, 0, 0]) })?;
        Ok(())
    }
}

impl<T: Hypercall + ?Sized> HypercallExt for T {}

/// Shared body of the reservation commands.
///
/// # Safety
///
/// See the callers: the frames' memory-map effect is the caller's responsibility.
unsafe fn reservation_op<H: Hypercall + ?Sized>(
    h: &H,
    cmd: u32,
    domid: DomId,
    extent_order: u32,
    frames: &mut [XenPfn],
) -> Result<usize, Errno> {
    let mut r = XenMemoryReservation {
        extent_start: addr_mut(frames.as_mut_ptr()),
        nr_extents: frames.len() as u64,
        extent_order,
        mem_flags: 0,
        domid,
        pad: [0; 6],
    };
    // SAFETY: `r` and `frames` are live and writable for the call; the rest is the caller's duty.
    let done = Errno::check(unsafe {
        h.hypercall(op::MEMORY_OP, [cmd as u64, addr_mut(&mut r), 0, 0, 0])
    })?;
    Ok((done as usize).min(frames.len()))
}
