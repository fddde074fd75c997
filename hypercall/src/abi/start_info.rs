//! ABI of `xen/arch-x86/hvm/start_info.h` (the PVH boot record) and the classic PV `start_info`
//! page of `xen/xen.h`.

use super::XenPfn;
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/xen.h", "xen/arch-x86/hvm/start_info.h"];

/// `XEN_HVM_START_MAGIC_VALUE`: `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED`.
pub const XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
/// `XEN_HVM_MEMMAP_TYPE_ACPI`.
pub const XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
/// `XEN_HVM_MEMMAP_TYPE_NVS`.
pub const XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
/// `XEN_HVM_MEMMAP_TYPE_UNUSABLE`.
pub const XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
/// `XEN_HVM_MEMMAP_TYPE_DISABLED`.
pub const XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
/// `XEN_HVM_MEMMAP_TYPE_PMEM`.
pub const XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;

/// `SIF_PRIVILEGED`: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `SIF_INITDOMAIN`: the domain is the initial control domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `SIF_MULTIBOOT_MOD`: `mod_start` is a multiboot module list.
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `SIF_MOD_START_PFN`: `mod_start` is a PFN, not a virtual address.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// `SIF_VIRT_P2M_4TOOLS`: tools understand a virtually mapped P2M.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// `SIF_PM_MASK`: reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

/// `MAX_GUEST_CMDLINE`: size of `start_info.cmd_line`.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `struct hvm_start_info`: what a PVH entry point finds in `%ebx`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmStartInfo {
    /// [`XEN_HVM_START_MAGIC_VALUE`].
    pub magic: u32,
    /// Version of the structure (0 or 1; `memmap_*` exist from version 1).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of [`HvmModlistEntry`] at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP.
    pub rsdp_paddr: u64,
    /// Physical address of the [`HvmMemmapTableEntry`] array (version >= 1).
    pub memmap_paddr: u64,
    /// Number of memory map entries (version >= 1).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}
const_assert_eq!(core::mem::size_of::<HvmStartInfo>(), 56);

impl HvmStartInfo {
    /// Whether `magic` holds [`XEN_HVM_START_MAGIC_VALUE`].
    pub const fn magic_ok(&self) -> bool {
        self.magic == XEN_HVM_START_MAGIC_VALUE
    }

    /// Whether the memory-map fields are valid (`version >= 1`).
    pub const fn has_memmap(&self) -> bool {
        self.version >= 1
    }
}

/// `struct hvm_modlist_entry`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of the module's command line.
    pub cmdline_paddr: u64,
    /// Reserved.
    pub reserved: u64,
}
const_assert_eq!(core::mem::size_of::<HvmModlistEntry>(), 32);

/// `struct hvm_memmap_table_entry`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HvmMemmapTableEntry {
    /// Base address.
    pub addr: u64,
    /// Size in bytes (entries of size 0 occur and must be skipped).
    pub size: u64,
    /// `XEN_HVM_MEMMAP_TYPE_*`.
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}
const_assert_eq!(core::mem::size_of::<HvmMemmapTableEntry>(), 24);

/// The `console` union of the PV `start_info`, in its `domU` view.
///
/// For the initial domain the same bytes are `dom0.info_off` (the low half of `mfn`) and
/// `dom0.info_size` (its high half); see [`StartInfoConsole::dom0_info`].
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfoConsole {
    /// Machine frame of the console ring page.
    pub mfn: XenPfn,
    /// Event channel of the console ring.
    pub evtchn: u32,
    /// Padding.
    pub pad: u32,
}

impl StartInfoConsole {
    /// The `dom0` view: `(info_off, info_size)` of the `dom0_vga_console_info`.
    pub const fn dom0_info(&self) -> (u32, u32) {
        (self.mfn as u32, (self.mfn >> 32) as u32)
    }
}

/// `struct start_info`: the page a classic PV guest finds in `%rsi` at entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// `"xen-<version>-<platform>"`, NUL padded.
    pub magic: [u8; 32],
    /// Total pages allocated to this domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// Machine frame of the xenstore ring page.
    pub store_mfn: XenPfn,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Padding.
    pub pad1: u32,
    /// Console ring (domU) or VGA console info location (dom0).
    pub console: StartInfoConsole,
    /// Virtual address of the top-level page table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the page-frame (P2M) list.
    pub mfn_list: u64,
    /// Virtual address (or PFN with `SIF_MOD_START_PFN`) of the pre-loaded module.
    pub mod_start: u64,
    /// Size of the module in bytes.
    pub mod_len: u64,
    /// Command line, NUL terminated.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First PFN of the initial P2M table.
    pub first_p2m_pfn: u64,
    /// Number of frames of the initial P2M table.
    pub nr_p2m_frames: u64,
}
const_assert_eq!(core::mem::size_of::<StartInfo>(), 1168);
const_assert_eq!(core::mem::offset_of!(StartInfo, console), 72);
const_assert_eq!(core::mem::offset_of!(StartInfo, cmd_line), 128);

impl StartInfo {
    /// The magic string up to its NUL (e.g. `b"xen-3.0-x86_64"`).
    pub fn magic_bytes(&self) -> &[u8] {
        let end = self
            .magic
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.magic.len());
        &self.magic[..end]
    }

    /// Whether the magic starts with `"xen-"`.
    pub fn magic_ok(&self) -> bool {
        self.magic.starts_with(b"xen-")
    }

    /// The command line up to its NUL.
    pub fn cmd_line_bytes(&self) -> &[u8] {
        let end = self
            .cmd_line
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.cmd_line.len());
        &self.cmd_line[..end]
    }
}

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct hvm_start_info" => HvmStartInfo {
        magic => "magic", version => "version", flags => "flags", nr_modules => "nr_modules",
        modlist_paddr => "modlist_paddr", cmdline_paddr => "cmdline_paddr", rsdp_paddr => "rsdp_paddr",
        memmap_paddr => "memmap_paddr", memmap_entries => "memmap_entries", reserved => "reserved",
    }
    "struct hvm_modlist_entry" => HvmModlistEntry {
        paddr => "paddr", size => "size", cmdline_paddr => "cmdline_paddr", reserved => "reserved",
    }
    "struct hvm_memmap_table_entry" => HvmMemmapTableEntry {
        addr => "addr", size => "size", kind => "type", reserved => "reserved",
    }
    "struct start_info" => StartInfo {
        magic => "magic", nr_pages => "nr_pages", shared_info => "shared_info", flags => "flags",
        store_mfn => "store_mfn", store_evtchn => "store_evtchn", console => "console",
        console.mfn => "console.domU.mfn", console.evtchn => "console.domU.evtchn",
        pt_base => "pt_base", nr_pt_frames => "nr_pt_frames", mfn_list => "mfn_list",
        mod_start => "mod_start", mod_len => "mod_len", cmd_line => "cmd_line",
        first_p2m_pfn => "first_p2m_pfn", nr_p2m_frames => "nr_p2m_frames",
    }
};
