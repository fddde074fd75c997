//! Classic PV boot (`type = "pv"`): entered at `pv_start64` (see `boot.rs`) in 64-bit mode with
//! `%rsi` = `start_info`, Xen's read-only page tables and the hypercall page the domain builder
//! filled at the address of our `XEN_ELFNOTE_HYPERCALL_PAGE` note.
//!
//! [`pv_kmain`] checks the hypercall page and the start_info magic, connects the PV console ring
//! (so every later message reaches xenconsoled), maps the rest of RAM ([`mmu`]), maps shared_info,
//! registers traps and callbacks ([`traps`]), and hands the common kernel a memory map made of
//! the P2M's valid frames. From there on the platform layer (`xen/`) and everything above it run
//! as under PVH; the few differences (event channels from the mapped shared_info, grant frames
//! through `GNTTABOP_setup_table`, xenstore and console rings from start_info, idle through
//! `SCHEDOP_block`) branch on [`crate::platform::is_pv`].

pub mod mmu;
pub mod traps;

use crate::start_info::BootInfo;
use core::cell::UnsafeCell;
use spin::Once;
use xen_hypercall::abi::memory::{
    XenMachphysMapping, XENMEM_MACHPHYS_MAPPING, XENMEM_MAXIMUM_RAM_PAGE,
};
use xen_hypercall::abi::start_info::StartInfo;
use xen_hypercall::abi::xen::SharedInfo;
use xen_hypercall::native::{looks_like_pv_hypercall_page, FrameTranslation, NativeHypercall};
use xen_hypercall::{op, Errno, Gfn, Hypercall, HypercallExt};

/// The start_info magic of a 64-bit x86 PV guest.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";

/// What a PV start can get wrong; reported on the console (or Xen's, before the ring is up).
#[derive(Debug, Clone, Copy)]
pub enum BootError {
    /// `%rsi` did not point to a start_info page of the expected kind (magic shown).
    BadStartInfoMagic([u8; 32]),
    /// `XENMEM_machphys_mapping` failed (no M2P table to translate frames with).
    NoMachphysMapping(Errno),
    /// start_info describes an impossible layout.
    BadLayout(&'static str),
    /// Xen refused a page-table update.
    PageTable(mmu::MmuError),
    /// Registering traps or callbacks failed.
    Traps(traps::TrapError),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::BadStartInfoMagic(m) => {
                let end = m.iter().position(|&b| b == 0).unwrap_or(m.len());
                write!(
                    f,
                    "bad start_info magic {:?} (want \"xen-3.0-x86_64\")",
                    core::str::from_utf8(&m[..end]).unwrap_or("<not UTF-8>")
                )
            }
            BootError::NoMachphysMapping(e) => {
                write!(f, "XENMEM_machphys_mapping failed: {e:?}")
            }
            BootError::BadLayout(what) => write!(f, "bad start_info layout: {what}"),
            BootError::PageTable(e) => write!(f, "page-table update failed: {e}"),
            BootError::Traps(e) => write!(f, "trap set-up failed: {e}"),
        }
    }
}

/// What the kernel keeps of start_info (validated).
#[derive(Debug, Clone, Copy)]
pub struct PvStart {
    /// Machine frame of shared_info.
    pub shared_info_mfn: u64,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Machine frame of the console ring.
    pub console_mfn: u64,
    /// Event channel of the console ring.
    pub console_evtchn: u32,
}

static HYP: Once<NativeHypercall> = Once::new();
static START: Once<PvStart> = Once::new();

/// The hypercall interface of a PV boot.
///
/// # Panics
///
/// Before [`pv_kmain`] installed it (never the case: only PV code calls it).
pub fn hyp() -> &'static NativeHypercall {
    HYP.get()
        .expect("PV hypercall page used before pv_kmain installed it")
}

/// The validated start_info facts (None before [`pv_kmain`] read them, or under PVH).
pub fn start() -> Option<&'static PvStart> {
    START.get()
}

/// P2M/M2P translation for the `Hypercall` trait: grants and rings carry machine frames.
struct PvTranslation;

impl FrameTranslation for PvTranslation {
    fn virt_to_frame(&self, addr: *const u8) -> Gfn {
        // Our memory is mapped at virtual = pseudo-physical; anything else has no frame we know.
        Gfn(mmu::pfn_to_mfn(addr as u64 >> 12).unwrap_or(u64::MAX >> 12))
    }

    fn frame_to_virt(&self, frame: Gfn) -> Option<*mut u8> {
        match mmu::mfn_to_pfn(frame.0) {
            Some(pfn) => Some((pfn << 12) as *mut u8),
            None => match mmu::map_foreign(frame.0) {
                Ok(va) => Some(va as *mut u8),
                Err(e) => {
                    crate::println!("pv: cannot map frame {:#x}: {e}", frame.0);
                    None
                }
            },
        }
    }
}

static TRANSLATION: PvTranslation = PvTranslation;

/// A page-aligned page that shared_info is mapped over.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);
// SAFETY: only its address is used (Xen's shared_info is mapped over it and accessed atomically
// by the event-channel code).
unsafe impl Sync for Page {}
static SHARED_INFO: Page = Page(UnsafeCell::new([0; 4096]));

/// The mapped shared_info page (valid once [`pv_kmain`] mapped it).
pub fn shared_info() -> *mut SharedInfo {
    SHARED_INFO.0.get().cast()
}

/// vCPU 0's event mask byte (`vcpu_info[0].evtchn_upcall_mask`).
fn upcall_mask() -> *mut u8 {
    // SAFETY: only an address computation inside the shared_info page.
    unsafe { &raw mut (*shared_info()).vcpu_info[0].evtchn_upcall_mask }
}

/// Masks event delivery (the PV form of `cli`).
pub fn mask_events() {
    // SAFETY: the byte is in the mapped shared_info page; Xen reads it, we own writes to it.
    unsafe { core::ptr::write_volatile(upcall_mask(), 1) };
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// The PV form of `sti; hlt`: `SCHEDOP_block` unmasks event delivery atomically with the check for
/// pending events and blocks until one arrives; the upcall then runs on return from the hypercall
/// (inside our own code, so the red zone of precompiled code is never in the way). Events are
/// masked again before returning.
pub fn block() {
    let _ = hyp().sched_block();
    mask_events();
}

/// The fault address of the last page fault (`vcpu_info[0].arch.cr2`: Xen stores it there).
pub fn cr2() -> u64 {
    // SAFETY: inside the mapped shared_info page; Xen writes it before delivering #PF.
    unsafe { core::ptr::read_volatile(&raw const (*shared_info()).vcpu_info[0].arch.cr2) }
}

/// The xenstore ring and its port.
pub fn store_ring() -> Option<(*mut u8, u32)> {
    let s = start()?;
    let pfn = mmu::mfn_to_pfn(s.store_mfn)?;
    Some(((pfn << 12) as *mut u8, s.store_evtchn))
}

/// The console ring and its port.
pub fn console_ring() -> Option<(*mut u8, u32)> {
    let s = start()?;
    let pfn = mmu::mfn_to_pfn(s.console_mfn)?;
    Some(((pfn << 12) as *mut u8, s.console_evtchn))
}

/// Reports a boot error wherever possible and crashes the domain (Xen logs the crash).
fn fail(e: BootError) -> ! {
    let mut buf = LineBuf {
        bytes: [0; 256],
        len: 0,
    };
    let _ = core::fmt::Write::write_fmt(&mut buf, format_args!("PV boot failed: {e}\n"));
    // Xen's console (dropped by release builds for domUs, kept by debug ones).
    let _ = hyp().console_write(&buf.bytes[..buf.len]);
    crate::println!("!!! PV boot failed: {e}");
    crate::platform::fatal_exit()
}

/// A fixed buffer for one formatted line (no heap before memory is set up).
struct LineBuf {
    bytes: [u8; 256],
    len: usize,
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Storage for the PV console ring's state (there is no heap when it connects).
struct ConsoleSlot(UnsafeCell<Option<crate::xen::console::PvConsole>>);
// SAFETY: written once by `connect_console` during single-threaded boot, then only used through
// the console lock.
unsafe impl Sync for ConsoleSlot {}
static CONSOLE: ConsoleSlot = ConsoleSlot(UnsafeCell::new(None));

/// Connects the console ring of start_info and makes it the console (debug port 0xE9 output
/// faults in PV, so it is off). Returns the ring's event channel.
fn connect_console() -> Result<u32, &'static str> {
    let (ring, port) = console_ring().ok_or("the console frame is not one of the domain's")?;
    // SAFETY: the ring page is the domain's console page (M2P and P2M agree), mapped in the
    // bootstrap region for the kernel's life; nothing else uses it.
    let c = unsafe { crate::xen::console::PvConsole::from_ring(ring.cast(), port) };
    // SAFETY: single-threaded boot, called once: nothing else references the slot yet.
    let slot = unsafe { &mut *CONSOLE.0.get() };
    let c: &'static mut crate::xen::console::PvConsole = slot.insert(c);
    crate::console::set_ring(c, false);
    Ok(port)
}

extern "C" {
    static hypercall_page: u8;
    static boot_stack_top: u8;
}

/// Rust entry of a classic PV boot, called by `pv_start64` on our boot stack with the start_info
/// address and the builder's boot stack pointer.
#[no_mangle]
pub extern "C" fn pv_kmain(si: *const StartInfo, builder_rsp: u64) -> ! {
    crate::platform::set_pv();
    let page = (&raw const hypercall_page).cast_mut();
    // SAFETY: the page is a 4 KiB static of the image (`boot.rs`).
    let filled = unsafe { core::slice::from_raw_parts(page.cast_const(), 4096) };
    if !looks_like_pv_hypercall_page(filled) {
        // No hypercall page (the builder ignored XEN_ELFNOTE_HYPERCALL_PAGE): without hypercalls
        // nothing can be reported, not even on the console ring (it needs an event). Stop with an
        // invalid opcode: with no trap table yet, Xen crashes the domain and logs this RIP.
        // SAFETY: ud2 only raises #UD.
        unsafe { core::arch::asm!("ud2", options(noreturn)) };
    }
    // SAFETY: the builder filled the page (checked above); it stays mapped and executable.
    let h =
        unsafe { NativeHypercall::from_page(page.cast_const(), 0) }.with_translation(&TRANSLATION);
    HYP.call_once(|| h);
    crate::xen::use_hypercall(h);
    crate::platform::set_xen();

    // SAFETY: %rsi points to the start_info page, mapped in the bootstrap region; it is checked
    // before use and the region is never reused (reserved below).
    let si = unsafe { &*si };
    if !si.magic_bytes().starts_with(START_INFO_MAGIC) {
        fail(BootError::BadStartInfoMagic(si.magic));
    }
    let mut mm = XenMachphysMapping::default();
    // SAFETY: `mm` is a live xen_machphys_mapping Xen writes.
    let r = unsafe {
        h.hypercall(
            op::MEMORY_OP,
            [
                XENMEM_MACHPHYS_MAPPING as u64,
                (&raw mut mm) as u64,
                0,
                0,
                0,
            ],
        )
    };
    if let Err(e) = Errno::check(r) {
        fail(BootError::NoMachphysMapping(e));
    }
    // The M2P is only backed for the host's RAM: bound lookups by its highest page too.
    // SAFETY: XENMEM_maximum_ram_page takes no argument.
    let max_ram_page =
        unsafe { h.hypercall(op::MEMORY_OP, [XENMEM_MAXIMUM_RAM_PAGE as u64, 0, 0, 0, 0]) };
    let max_mfn = match u64::try_from(max_ram_page) {
        Ok(p) if p > 0 => mm.max_mfn.min(p),
        _ => mm.max_mfn,
    };
    let nr_pages = si.nr_pages;
    if nr_pages == 0 || nr_pages > (1 << 36) || si.mfn_list == 0 || si.pt_base & 0xfff != 0 {
        fail(BootError::BadLayout("nr_pages, mfn_list or pt_base"));
    }
    // Everything the builder put after the kernel ends at the highest of these (each 4 KiB aligned).
    let si_end = ((si as *const StartInfo as u64) >> 12) + 1;
    let p2m_end = (si.mfn_list + nr_pages * 8).div_ceil(4096);
    let pt_end = (si.pt_base >> 12) + si.nr_pt_frames;
    let stack_end = builder_rsp.div_ceil(4096);
    let (_, kernel_end) = crate::mem::kernel_range();
    let first_free = [
        si_end,
        p2m_end,
        pt_end,
        stack_end,
        kernel_end.div_ceil(4096),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if first_free >= nr_pages {
        fail(BootError::BadLayout(
            "the bootstrap region fills all memory",
        ));
    }
    // SAFETY: mfn_list and pt_base are the builder's, mapped in the bootstrap region.
    unsafe { mmu::init(si.mfn_list, nr_pages, si.pt_base, max_mfn, first_free) };
    let start = START.call_once(|| PvStart {
        shared_info_mfn: si.shared_info >> 12,
        store_mfn: si.store_mfn,
        store_evtchn: si.store_evtchn,
        console_mfn: si.console.mfn,
        console_evtchn: si.console.evtchn,
    });
    let console = connect_console();
    crate::console::init_log(log::LevelFilter::Info);
    crate::println!(
        "unikernel-demo {}: booting (PV entry, start_info at {:#x}, magic \"{}\")",
        crate::VERSION,
        si as *const StartInfo as u64,
        core::str::from_utf8(si.magic_bytes()).unwrap_or("?")
    );
    match console {
        Ok(port) => crate::println!("xen: PV console ring connected (event channel {port})"),
        Err(e) => crate::println!("pv: no PV console ring ({e})"),
    }
    crate::println!(
        "pv: {} pages, P2M at {:#x}, page tables at {:#x} ({} frames), first free frame {:#x}, M2P up to mfn {:#x}",
        nr_pages,
        si.mfn_list,
        si.pt_base,
        si.nr_pt_frames,
        first_free,
        max_mfn
    );

    match mmu::map_ram() {
        Ok(n) => crate::println!(
            "pv: RAM mapped at virtual = pseudo-physical ({n} page-table updates, {} new table frames)",
            mmu::first_free_pfn() - first_free
        ),
        Err(e) => fail(BootError::PageTable(e)),
    }
    if let Err(e) = mmu::map_at(shared_info() as u64, start.shared_info_mfn) {
        fail(BootError::PageTable(e));
    }
    mask_events();
    let stack_top = (&raw const boot_stack_top) as u64;
    if let Err(e) = traps::init(stack_top) {
        fail(BootError::Traps(e));
    }
    crate::println!("pv: shared_info mapped, trap table and event callback registered");

    let info = BootInfo::from_pv(si.cmd_line_bytes(), nr_pages, mmu::pfn_to_mfn);
    let reserved = [(0, mmu::first_free_pfn() << 12)];
    let m = crate::mem::init(info.memmap(), &reserved, mmu::mapped_end());
    crate::boot_common(info, m)
}
