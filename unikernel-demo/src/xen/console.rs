//! The PV console ring (`xen/io/console.h`) to xenconsoled: page and event channel from
//! `HVM_PARAM_CONSOLE_PFN` / `HVM_PARAM_CONSOLE_EVTCHN`.

use core::sync::atomic::{fence, AtomicU32, Ordering};
use xen_hypercall::abi::console::{XenconsInterface, XENCONS_OUT_SIZE};
use xen_hypercall::abi::hvm;
use xen_hypercall::HypercallExt;

/// The console's event channel: set by [`PvConsole::connect`], read again by [`resume`] (a domain
/// resumed by `xl restore` / `xl migrate` gets a new one; the ring page stays where it was).
static PORT: AtomicU32 = AtomicU32::new(0);

/// The guest side of the console ring.
pub struct PvConsole {
    ring: *mut XenconsInterface,
}

// SAFETY: the ring pointer refers to the shared console page, which lives for the kernel's life; all
// access goes through `&mut self` under the console lock.
unsafe impl Send for PvConsole {}

/// Why the PV console is not available.
#[derive(Debug)]
pub enum ConsoleError {
    /// A parameter could not be read.
    Param(xen_hypercall::Errno),
    /// The toolstack gave no console page.
    NoPage,
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConsoleError::Param(e) => write!(f, "HVM_PARAM_CONSOLE_* unreadable: {e:?}"),
            ConsoleError::NoPage => write!(f, "the toolstack set up no console page"),
        }
    }
}

impl PvConsole {
    /// Connects to the console ring the toolstack set up.
    pub fn connect() -> Result<PvConsole, ConsoleError> {
        let h = super::hyp().ok_or(ConsoleError::Param(xen_hypercall::Errno::ENOSYS))?;
        let pfn = h
            .hvm_get_param(hvm::HVM_PARAM_CONSOLE_PFN)
            .map_err(ConsoleError::Param)?;
        let port = h
            .hvm_get_param(hvm::HVM_PARAM_CONSOLE_EVTCHN)
            .map_err(ConsoleError::Param)?;
        if pfn == 0 || pfn >= crate::boot::IDENTITY_MAPPED >> 12 {
            return Err(ConsoleError::NoPage);
        }
        PORT.store(port as u32, Ordering::Release);
        Ok(PvConsole {
            ring: (pfn << 12) as *mut XenconsInterface,
        })
    }

    /// Uses the console ring at `ring`, notified through `port` (classic PV: from start_info).
    ///
    /// # Safety
    ///
    /// `ring` must be this domain's console page, mapped for the kernel's life and used by no one
    /// else.
    pub unsafe fn from_ring(ring: *mut XenconsInterface, port: u32) -> PvConsole {
        PORT.store(port, Ordering::Release);
        PvConsole { ring }
    }

    /// The console's event channel.
    pub fn port(&self) -> u32 {
        PORT.load(Ordering::Acquire)
    }

    fn idx(ring: *mut XenconsInterface) -> (&'static AtomicU32, &'static AtomicU32) {
        // SAFETY: the ring page is mapped for the kernel's life; the indices are u32s the backend
        // updates concurrently, so they are accessed atomically.
        unsafe {
            (
                AtomicU32::from_ptr((&raw mut (*ring).out_cons).cast()),
                AtomicU32::from_ptr((&raw mut (*ring).out_prod).cast()),
            )
        }
    }
}

impl crate::console::Sink for PvConsole {
    fn write(&mut self, bytes: &[u8]) {
        let mut sent = 0;
        let mut stalls = 0u32;
        while sent < bytes.len() {
            let (cons_a, prod_a) = Self::idx(self.ring);
            let cons = cons_a.load(Ordering::Acquire);
            let prod = prod_a.load(Ordering::Relaxed);
            let used = prod.wrapping_sub(cons) as usize;
            if used >= XENCONS_OUT_SIZE {
                // A backend that claims more than a full ring is broken: drop output, never overrun.
                if used > XENCONS_OUT_SIZE {
                    return;
                }
                super::notify_raw(PORT.load(Ordering::Acquire));
                stalls += 1;
                if stalls > 10_000 {
                    return;
                }
                super::yield_cpu();
                continue;
            }
            let room = XENCONS_OUT_SIZE - used;
            let n = room.min(bytes.len() - sent);
            for i in 0..n {
                let at = (prod.wrapping_add(i as u32) as usize) & (XENCONS_OUT_SIZE - 1);
                // SAFETY: `at` < XENCONS_OUT_SIZE, inside the ring page's output array.
                unsafe {
                    core::ptr::write_volatile(
                        (&raw mut (*self.ring).output).cast::<u8>().add(at),
                        bytes[sent + i],
                    )
                };
            }
            fence(Ordering::Release);
            prod_a.store(prod.wrapping_add(n as u32), Ordering::Release);
            sent += n;
            super::notify_raw(PORT.load(Ordering::Acquire));
        }
    }
}

/// After a resume in a new domain: reads the console's new event channel from
/// `HVM_PARAM_CONSOLE_EVTCHN` (the ring stays at the same frame; the toolstack cleared it, and the
/// writer keeps no index of its own). Returns the port.
pub fn resume() -> Result<u32, ConsoleError> {
    let h = super::hyp().ok_or(ConsoleError::Param(xen_hypercall::Errno::ENOSYS))?;
    let port = h
        .hvm_get_param(hvm::HVM_PARAM_CONSOLE_EVTCHN)
        .map_err(ConsoleError::Param)?;
    let port =
        u32::try_from(port).map_err(|_| ConsoleError::Param(xen_hypercall::Errno::EINVAL))?;
    PORT.store(port, Ordering::Release);
    Ok(port)
}
