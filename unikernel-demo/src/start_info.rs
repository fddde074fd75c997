//! `struct hvm_start_info` (`xen/arch-x86/hvm/start_info.h`): what the PVH loader hands us in %ebx.
//!
//! Everything we need from it (command line, memory map) is copied into kernel-owned storage right
//! away, so the pages the loader put it in can be reused.

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const MAGIC: u32 = 0x336e_c578;

/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const MEMMAP_TYPE_RAM: u32 = 1;

/// Maximum memory-map entries kept.
pub const MAX_MEMMAP: usize = 64;
/// Maximum command-line bytes kept.
pub const MAX_CMDLINE: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<RawStartInfo>() == 56);

#[repr(C)]
#[derive(Clone, Copy)]
struct RawMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<RawMemmapEntry>() == 24);

/// One memory-map entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemEntry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes (never 0: such entries are skipped).
    pub size: u64,
    /// `XEN_HVM_MEMMAP_TYPE_*` / e820 type (1 = RAM).
    pub kind: u32,
}

/// What we keep of the start info.
pub struct BootInfo {
    /// Start-info version.
    pub version: u32,
    /// The command line bytes (without the NUL), truncated to [`MAX_CMDLINE`].
    pub cmdline: [u8; MAX_CMDLINE],
    /// Length of `cmdline`.
    pub cmdline_len: usize,
    /// Memory map entries (size-0 entries skipped).
    pub memmap: [MemEntry; MAX_MEMMAP],
    /// Number of valid `memmap` entries (0 when the start info has none).
    pub memmap_len: usize,
}

/// Why the start info was rejected.
#[derive(Debug)]
pub enum StartInfoError {
    /// %ebx was 0.
    Null,
    /// Bad magic value.
    BadMagic(u32),
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::Null => write!(f, "the loader passed no start info (%ebx = 0)"),
            StartInfoError::BadMagic(m) => write!(
                f,
                "bad magic {m:#x} (want {MAGIC:#x}): not booted through PVH"
            ),
        }
    }
}

impl BootInfo {
    /// Copies what we need out of the start info at physical address `pa`.
    ///
    /// # Safety
    ///
    /// `pa` must be the value the PVH loader passed in %ebx, identity mapped, and the memory it and
    /// its command line / memory map occupy must not have been reused yet.
    pub unsafe fn from_phys(pa: u64) -> Result<BootInfo, StartInfoError> {
        if pa == 0 {
            return Err(StartInfoError::Null);
        }
        // SAFETY: the caller guarantees `pa` points to the loader's start info (identity mapped).
        let raw = unsafe { core::ptr::read_unaligned(pa as *const RawStartInfo) };
        if raw.magic != MAGIC {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        let mut info = BootInfo {
            version: raw.version,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            memmap: [MemEntry::default(); MAX_MEMMAP],
            memmap_len: 0,
        };
        if raw.cmdline_paddr != 0 {
            let p = raw.cmdline_paddr as *const u8;
            while info.cmdline_len < MAX_CMDLINE {
                // SAFETY: the loader's command line is a NUL-terminated string at this address; we stop
                // at the NUL or at our buffer's size.
                let b = unsafe { core::ptr::read_volatile(p.add(info.cmdline_len)) };
                if b == 0 {
                    break;
                }
                info.cmdline[info.cmdline_len] = b;
                info.cmdline_len += 1;
            }
        }
        if raw.version >= 1 && raw.memmap_paddr != 0 {
            let n = (raw.memmap_entries as usize).min(MAX_MEMMAP * 4);
            for i in 0..n {
                // SAFETY: the loader placed `memmap_entries` entries at `memmap_paddr`.
                let e = unsafe {
                    core::ptr::read_unaligned((raw.memmap_paddr as *const RawMemmapEntry).add(i))
                };
                info.push_mem(MemEntry {
                    addr: e.addr,
                    size: e.size,
                    kind: e.kind,
                });
            }
        }
        Ok(info)
    }

    /// Builds the boot info of a classic PV start: the command line of start_info and a memory map
    /// of the runs of pseudo-physical frames that have a machine frame (`pfn_to_mfn`).
    pub fn from_pv(cmdline: &[u8], nr_pages: u64, pfn_to_mfn: fn(u64) -> Option<u64>) -> BootInfo {
        let mut info = BootInfo {
            version: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            memmap: [MemEntry::default(); MAX_MEMMAP],
            memmap_len: 0,
        };
        let n = cmdline.len().min(MAX_CMDLINE);
        info.cmdline[..n].copy_from_slice(&cmdline[..n]);
        info.cmdline_len = n;
        let mut run_start = None;
        for pfn in 0..=nr_pages {
            let valid = pfn < nr_pages && pfn_to_mfn(pfn).is_some();
            match (valid, run_start) {
                (true, None) => run_start = Some(pfn),
                (false, Some(s)) => {
                    info.push_mem(MemEntry {
                        addr: s << 12,
                        size: (pfn - s) << 12,
                        kind: MEMMAP_TYPE_RAM,
                    });
                    run_start = None;
                }
                _ => {}
            }
        }
        info
    }

    /// Adds a memory-map entry, skipping empty ones; returns false when the table is full.
    pub fn push_mem(&mut self, e: MemEntry) -> bool {
        if e.size == 0 {
            return true;
        }
        if self.memmap_len == MAX_MEMMAP {
            return false;
        }
        self.memmap[self.memmap_len] = e;
        self.memmap_len += 1;
        true
    }

    /// The command line as text (lossy: invalid UTF-8 ends it).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The memory map.
    pub fn memmap(&self) -> &[MemEntry] {
        &self.memmap[..self.memmap_len]
    }
}
