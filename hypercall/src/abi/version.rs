//! ABI of `xen/version.h` and `xen/features.h`: `HYPERVISOR_xen_version` commands, their result
//! buffers, and the `XENFEAT_*` feature bits.

use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/version.h", "xen/features.h"];

/// `XENVER_version`: arg is NULL; returns `major << 16 | minor`.
pub const XENVER_VERSION: u32 = 0;
/// `XENVER_extraversion`: arg is [`XenExtraversion`].
pub const XENVER_EXTRAVERSION: u32 = 1;
/// `XENVER_compile_info`: arg is [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u32 = 2;
/// `XENVER_capabilities`: arg is [`XenCapabilitiesInfo`].
pub const XENVER_CAPABILITIES: u32 = 3;
/// `XENVER_changeset`: arg is [`XenChangesetInfo`].
pub const XENVER_CHANGESET: u32 = 4;
/// `XENVER_platform_parameters`: arg is [`XenPlatformParameters`].
pub const XENVER_PLATFORM_PARAMETERS: u32 = 5;
/// `XENVER_get_features`: arg is [`XenFeatureInfo`].
pub const XENVER_GET_FEATURES: u32 = 6;
/// `XENVER_pagesize`: arg is NULL; returns the page size.
pub const XENVER_PAGESIZE: u32 = 7;
/// `XENVER_guest_handle`: arg is a `xen_domain_handle_t` (16 bytes).
pub const XENVER_GUEST_HANDLE: u32 = 8;
/// `XENVER_commandline`: arg is a 1024-byte buffer (privileged).
pub const XENVER_COMMANDLINE: u32 = 9;
/// `XENVER_build_id`.
pub const XENVER_BUILD_ID: u32 = 10;

/// `XENFEAT_writable_page_tables`.
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// `XENFEAT_writable_descriptor_tables`.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// `XENFEAT_auto_translated_physmap`: the guest uses gfns, Xen translates (PVH/HVM).
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// `XENFEAT_supervisor_mode_kernel`.
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// `XENFEAT_pae_pgdir_above_4gb`.
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// `XENFEAT_mmu_pt_update_preserve_ad`.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// `XENFEAT_highmem_assist`.
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// `XENFEAT_gnttab_map_avail_bits`.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// `XENFEAT_hvm_callback_vector`: `HVM_PARAM_CALLBACK_IRQ` accepts the vector type.
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// `XENFEAT_hvm_safe_pvclock`.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// `XENFEAT_hvm_pirqs`.
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// `XENFEAT_dom0`.
pub const XENFEAT_DOM0: u32 = 11;
/// `XENFEAT_grant_map_identity`.
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// `XENFEAT_memory_op_vnode_supported`.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// `XENFEAT_ARM_SMCCC_supported`.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// `XENFEAT_linux_rsdp_unrestricted`.
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// `XENFEAT_not_direct_mapped`.
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// `XENFEAT_direct_mapped`.
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// `XENFEAT_NR_SUBMAPS`: number of 32-bit feature submaps.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// The bytes of a NUL-padded C string buffer up to the first NUL.
fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

macro_rules! char_buffer {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[repr(C)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// An all-zero buffer.
            pub const fn zeroed() -> Self {
                $name([0; $len])
            }

            /// The string's bytes up to the first NUL (not validated: Xen fills it).
            pub fn as_bytes(&self) -> &[u8] {
                c_bytes(&self.0)
            }

            /// The string, when it is valid UTF-8.
            pub fn to_str(&self) -> Option<&str> {
                core::str::from_utf8(self.as_bytes()).ok()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::zeroed()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.to_str().unwrap_or("<non-utf8>"))
            }
        }
        const_assert_eq!(core::mem::size_of::<$name>(), $len);
    };
}

char_buffer!(
    /// `xen_extraversion_t`: the version suffix, e.g. `".0"` or `"-rc"`.
    XenExtraversion, 16
);
char_buffer!(
    /// `xen_changeset_info_t`: the source changeset.
    XenChangesetInfo, 64
);
char_buffer!(
    /// `xen_capabilities_info_t`: space-separated capabilities, e.g. `"xen-3.0-x86_64 hvm-3.0-x86_64"`.
    XenCapabilitiesInfo, 1024
);

/// `struct xen_compile_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenCompileInfo {
    /// Compiler.
    pub compiler: [u8; 64],
    /// Built by.
    pub compile_by: [u8; 16],
    /// Build host domain.
    pub compile_domain: [u8; 32],
    /// Build date.
    pub compile_date: [u8; 32],
}
const_assert_eq!(core::mem::size_of::<XenCompileInfo>(), 144);

/// `struct xen_platform_parameters`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenPlatformParameters {
    /// Start of the hypervisor's virtual address range (PV).
    pub virt_start: u64,
}
const_assert_eq!(core::mem::size_of::<XenPlatformParameters>(), 8);

/// `struct xen_feature_info`: one 32-bit submap of `XENFEAT_*` bits.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenFeatureInfo {
    /// IN: which submap (feature `n` is bit `n % 32` of submap `n / 32`).
    pub submap_idx: u32,
    /// OUT: the submap.
    pub submap: u32,
}
const_assert_eq!(core::mem::size_of::<XenFeatureInfo>(), 8);

/// A decoded `XENVER_version` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XenVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl XenVersion {
    /// Decodes `major << 16 | minor`.
    pub const fn from_raw(v: u32) -> XenVersion {
        XenVersion {
            major: (v >> 16) as u16,
            minor: v as u16,
        }
    }
}

impl core::fmt::Display for XenVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "xen_extraversion_t" => XenExtraversion {}
    "xen_changeset_info_t" => XenChangesetInfo {}
    "xen_capabilities_info_t" => XenCapabilitiesInfo {}
    "struct xen_compile_info" => XenCompileInfo {
        compiler => "compiler", compile_by => "compile_by", compile_domain => "compile_domain",
        compile_date => "compile_date",
    }
    "struct xen_platform_parameters" => XenPlatformParameters { virt_start => "virt_start" }
    "struct xen_feature_info" => XenFeatureInfo { submap_idx => "submap_idx", submap => "submap" }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_strings() {
        let v = XenVersion::from_raw(0x0004_0011);
        assert_eq!((v.major, v.minor), (4, 17));
        assert_eq!(alloc::format!("{v}"), "4.17");
        let mut e = XenExtraversion::zeroed();
        e.0[..3].copy_from_slice(b".0x");
        assert_eq!(e.to_str(), Some(".0x"));
        e.0 = [b'a'; 16];
        assert_eq!(e.as_bytes().len(), 16);
        e.0[0] = 0xff;
        assert_eq!(e.to_str(), None);
    }
}
