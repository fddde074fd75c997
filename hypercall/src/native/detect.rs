//! Xen detection from CPUID, as pure functions over a CPUID callback so the parsing is testable on
//! any host.
//!
//! Xen's leaves (`xen/arch-x86/cpuid.h`) sit at a base in `0x4000_0000..0x4001_0000` on a 0x100
//! boundary (a base other than `0x4000_0000` when Xen also offers Viridian/Hyper-V leaves):
//!
//! | leaf     | eax                      | ebx               | ecx             | edx           |
//! |----------|--------------------------|-------------------|-----------------|---------------|
//! | base + 0 | highest Xen leaf         | `"XenV"`          | `"MMXe"`        | `"nVMM"`      |
//! | base + 1 | `major << 16 \| minor`   |                   |                 |               |
//! | base + 2 | hypercall pages          | MSR for the page  | features        |               |
//! | base + 4 | HVM flags                | vCPU id (flagged) | domid (flagged) |               |

use crate::abi::version::XenVersion;

/// One CPUID result (an architecture-neutral copy of the four registers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// `eax`.
    pub eax: u32,
    /// `ebx`.
    pub ebx: u32,
    /// `ecx`.
    pub ecx: u32,
    /// `edx`.
    pub edx: u32,
}

/// `XEN_CPUID_FIRST_LEAF`: the first base probed.
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// One past the last base probed.
pub const XEN_CPUID_LAST_LEAF: u32 = 0x4001_0000;
/// Distance between candidate bases.
pub const XEN_CPUID_LEAF_STEP: u32 = 0x100;
/// The 12-byte signature in ebx, ecx, edx of the base leaf.
pub const XEN_CPUID_SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";
/// `XEN_CPUID_SIGNATURE_EBX`.
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// `XEN_CPUID_SIGNATURE_ECX`.
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// `XEN_CPUID_SIGNATURE_EDX`.
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;

/// `XEN_HVM_CPUID_APIC_ACCESS_VIRT` (base + 4, eax).
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// `XEN_HVM_CPUID_X2APIC_VIRT`.
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// `XEN_HVM_CPUID_IOMMU_MAPPINGS`.
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// `XEN_HVM_CPUID_VCPU_ID_PRESENT`: ebx of base + 4 holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// `XEN_HVM_CPUID_DOMID_PRESENT`: ecx of base + 4 holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// `XEN_HVM_CPUID_UPCALL_VECTOR`: `HVMOP_set_evtchn_upcall_vector` is available.
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// What the Xen CPUID leaves report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenCpuid {
    /// The base leaf at which the signature was found.
    pub base: u32,
    /// The highest Xen leaf (eax of the base leaf).
    pub max_leaf: u32,
    /// Xen's version (base + 1).
    pub version: XenVersion,
    /// Number of hypercall pages the MSR interface can fill (base + 2, eax).
    pub hypercall_pages: u32,
    /// The MSR to which the hypercall page's guest-physical address is written (base + 2, ebx).
    pub hypercall_msr: u32,
    /// Feature bits of base + 2, ecx (`XEN_CPUID_FEAT1_*`).
    pub features: u32,
    /// HVM flags of base + 4, eax (`XEN_HVM_CPUID_*`), 0 when the leaf is absent.
    pub hvm_flags: u32,
    /// This vCPU's id, when base + 4 reports it.
    pub vcpu_id: Option<u32>,
    /// This domain's id, when base + 4 reports it.
    pub domid: Option<u16>,
}

/// Whether the registers of a base leaf carry the `"XenVMMXenVMM"` signature.
pub fn is_xen_signature(r: &CpuidResult) -> bool {
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
    &sig == XEN_CPUID_SIGNATURE
}

/// Scans the candidate bases with `cpuid` and decodes Xen's leaves.
///
/// Returns `None` when no base carries the signature, or the one that does reports fewer than the
/// three leaves (base .. base + 2) every Xen provides.
pub fn detect_xen(mut cpuid: impl FnMut(u32) -> CpuidResult) -> Option<XenCpuid> {
    let base = (XEN_CPUID_FIRST_LEAF..XEN_CPUID_LAST_LEAF)
        .step_by(XEN_CPUID_LEAF_STEP as usize)
        .find(|&leaf| is_xen_signature(&cpuid(leaf)))?;
    let max_leaf = cpuid(base).eax;
    if max_leaf < base + 2 || max_leaf >= base + XEN_CPUID_LEAF_STEP {
        return None;
    }
    let version = XenVersion::from_raw(cpuid(base + 1).eax);
    let l2 = cpuid(base + 2);
    let (hvm_flags, vcpu_id, domid) = if max_leaf >= base + 4 {
        let l4 = cpuid(base + 4);
        (
            l4.eax,
            (l4.eax & XEN_HVM_CPUID_VCPU_ID_PRESENT != 0).then_some(l4.ebx),
            (l4.eax & XEN_HVM_CPUID_DOMID_PRESENT != 0).then_some(l4.ecx as u16),
        )
    } else {
        (0, None, None)
    };
    Some(XenCpuid {
        base,
        max_leaf,
        version,
        hypercall_pages: l2.eax,
        hypercall_msr: l2.ebx,
        features: l2.ecx,
        hvm_flags,
        vcpu_id,
        domid,
    })
}

/// The value written to the hypercall MSR to fill hypercall page `index` at guest-physical
/// address `gpa` (page-aligned): `gpa | index`. `None` when `gpa` is not page-aligned or `index`
/// does not fit in the page-offset bits.
pub fn hypercall_msr_value(gpa: u64, index: u32) -> Option<u64> {
    if gpa & 0xfff != 0 || index > 0xfff {
        return None;
    }
    Some(gpa | index as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn sig() -> CpuidResult {
        CpuidResult {
            eax: 0,
            ebx: XEN_CPUID_SIGNATURE_EBX,
            ecx: XEN_CPUID_SIGNATURE_ECX,
            edx: XEN_CPUID_SIGNATURE_EDX,
        }
    }

    fn table(entries: &[(u32, CpuidResult)]) -> impl FnMut(u32) -> CpuidResult + '_ {
        let map: BTreeMap<u32, CpuidResult> = entries.iter().copied().collect();
        move |leaf| map.get(&leaf).copied().unwrap_or_default()
    }

    #[test]
    fn signature_constants_spell_xen() {
        assert!(is_xen_signature(&sig()));
        let kvm = CpuidResult {
            eax: 0,
            ebx: 0x4b4d_564b,
            ecx: 0x564b_4d56,
            edx: 0x4d,
        };
        assert!(!is_xen_signature(&kvm));
    }

    #[test]
    fn finds_xen_at_first_base() {
        let base = 0x4000_0000;
        let leaves = [
            (
                base,
                CpuidResult {
                    eax: base + 5,
                    ..sig()
                },
            ),
            (
                base + 1,
                CpuidResult {
                    eax: 0x0004_0011,
                    ..Default::default()
                },
            ),
            (
                base + 2,
                CpuidResult {
                    eax: 1,
                    ebx: 0x4000_0000,
                    ecx: 1,
                    edx: 0,
                },
            ),
            (
                base + 4,
                CpuidResult {
                    eax: XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT,
                    ebx: 0,
                    ecx: 7,
                    edx: 0,
                },
            ),
        ];
        let x = detect_xen(table(&leaves)).unwrap();
        assert_eq!(x.base, base);
        assert_eq!((x.version.major, x.version.minor), (4, 17));
        assert_eq!(x.hypercall_pages, 1);
        assert_eq!(x.hypercall_msr, 0x4000_0000);
        assert_eq!(x.features, 1);
        assert_eq!(x.vcpu_id, Some(0));
        assert_eq!(x.domid, Some(7));
    }

    #[test]
    fn finds_xen_behind_viridian_leaves() {
        // Hyper-V signature at 0x40000000, Xen shifted to 0x40000100.
        let base = 0x4000_0100;
        let hv = CpuidResult {
            eax: 0x4000_0006,
            ebx: 0x7263_694d,
            ecx: 0x666f_736f,
            edx: 0x7648_2074,
        };
        let leaves = [
            (0x4000_0000, hv),
            (
                base,
                CpuidResult {
                    eax: base + 3,
                    ..sig()
                },
            ),
            (
                base + 1,
                CpuidResult {
                    eax: 0x0004_000e,
                    ..Default::default()
                },
            ),
            (
                base + 2,
                CpuidResult {
                    eax: 1,
                    ebx: 0x4000_0200,
                    ecx: 0,
                    edx: 0,
                },
            ),
        ];
        let x = detect_xen(table(&leaves)).unwrap();
        assert_eq!(x.base, base);
        assert_eq!(x.version.minor, 14);
        assert_eq!(x.hypercall_msr, 0x4000_0200);
        assert_eq!((x.hvm_flags, x.vcpu_id, x.domid), (0, None, None));
    }

    #[test]
    fn finds_xen_at_last_base_and_not_beyond() {
        let last = XEN_CPUID_LAST_LEAF - XEN_CPUID_LEAF_STEP;
        let leaves = [
            (
                last,
                CpuidResult {
                    eax: last + 2,
                    ..sig()
                },
            ),
            (
                last + 2,
                CpuidResult {
                    eax: 1,
                    ebx: 0x4000_0000,
                    ecx: 0,
                    edx: 0,
                },
            ),
        ];
        assert_eq!(detect_xen(table(&leaves)).unwrap().base, last);
        let beyond = [(
            XEN_CPUID_LAST_LEAF,
            CpuidResult {
                eax: XEN_CPUID_LAST_LEAF + 2,
                ..sig()
            },
        )];
        assert_eq!(detect_xen(table(&beyond)), None);
        // A signature off the 0x100 grid is not probed.
        let off_grid = [(
            0x4000_0080,
            CpuidResult {
                eax: 0x4000_0082,
                ..sig()
            },
        )];
        assert_eq!(detect_xen(table(&off_grid)), None);
    }

    #[test]
    fn rejects_missing_or_too_few_leaves() {
        assert_eq!(detect_xen(|_| CpuidResult::default()), None);
        let base = 0x4000_0000;
        let short = [(
            base,
            CpuidResult {
                eax: base + 1,
                ..sig()
            },
        )];
        assert_eq!(detect_xen(table(&short)), None);
        let absurd = [(
            base,
            CpuidResult {
                eax: base + 0x1000,
                ..sig()
            },
        )];
        assert_eq!(detect_xen(table(&absurd)), None);
    }

    #[test]
    fn probes_every_base_in_order() {
        let mut seen = alloc::vec::Vec::new();
        let _ = detect_xen(|leaf| {
            seen.push(leaf);
            CpuidResult::default()
        });
        assert_eq!(seen.len(), 0x100);
        assert_eq!(seen[0], 0x4000_0000);
        assert_eq!(seen[1], 0x4000_0100);
        assert_eq!(*seen.last().unwrap(), 0x4000_ff00);
    }

    #[test]
    fn msr_value() {
        assert_eq!(hypercall_msr_value(0x12_3000, 0), Some(0x12_3000));
        assert_eq!(hypercall_msr_value(0x12_3000, 1), Some(0x12_3001));
        assert_eq!(hypercall_msr_value(0x12_3008, 0), None);
        assert_eq!(hypercall_msr_value(0x12_3000, 0x1000), None);
    }
}
