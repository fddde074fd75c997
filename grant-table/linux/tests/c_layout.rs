//! The gntalloc/gntdev ioctl structs and request numbers against Linux's installed uapi headers
//! (`/usr/include/xen/{gntalloc,gntdev}.h`, Debian package linux-libc-dev): a C program prints
//! `sizeof`, `offsetof` and the `IOCTL_*` values, compiled with `cc` here, compared with the Rust
//! side. Without the headers the test is skipped with a message unless `CI` is set.

use std::mem::{offset_of, size_of};
use xen_c_check::{value, CheckedHeaders};
use xen_grant_table_linux::sys::*;

/// (C expression, Rust value).
fn items() -> Vec<(&'static str, u64)> {
    vec![
        (
            "sizeof(struct ioctl_gntalloc_alloc_gref)",
            size_of::<GntallocAllocGref>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_alloc_gref, domid)",
            offset_of!(GntallocAllocGref, domid) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_alloc_gref, flags)",
            offset_of!(GntallocAllocGref, flags) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_alloc_gref, count)",
            offset_of!(GntallocAllocGref, count) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_alloc_gref, index)",
            offset_of!(GntallocAllocGref, index) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids)",
            GNTALLOC_ALLOC_GREF_IDS_OFFSET as u64,
        ),
        (
            "sizeof(struct ioctl_gntalloc_dealloc_gref)",
            size_of::<GntallocDeallocGref>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_dealloc_gref, index)",
            offset_of!(GntallocDeallocGref, index) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_dealloc_gref, count)",
            offset_of!(GntallocDeallocGref, count) as u64,
        ),
        (
            "sizeof(struct ioctl_gntalloc_unmap_notify)",
            size_of::<UnmapNotify>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_unmap_notify, index)",
            offset_of!(UnmapNotify, index) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_unmap_notify, action)",
            offset_of!(UnmapNotify, action) as u64,
        ),
        (
            "offsetof(struct ioctl_gntalloc_unmap_notify, event_channel_port)",
            offset_of!(UnmapNotify, event_channel_port) as u64,
        ),
        (
            "sizeof(struct ioctl_gntdev_unmap_notify)",
            size_of::<UnmapNotify>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_unmap_notify, action)",
            offset_of!(UnmapNotify, action) as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_unmap_notify, event_channel_port)",
            offset_of!(UnmapNotify, event_channel_port) as u64,
        ),
        ("GNTALLOC_FLAG_WRITABLE", u64::from(GNTALLOC_FLAG_WRITABLE)),
        (
            "UNMAP_NOTIFY_CLEAR_BYTE",
            u64::from(UNMAP_NOTIFY_CLEAR_BYTE),
        ),
        (
            "UNMAP_NOTIFY_SEND_EVENT",
            u64::from(UNMAP_NOTIFY_SEND_EVENT),
        ),
        (
            "sizeof(struct ioctl_gntdev_grant_ref)",
            size_of::<GntdevGrantRef>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_grant_ref, domid)",
            offset_of!(GntdevGrantRef, domid) as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_grant_ref, ref)",
            offset_of!(GntdevGrantRef, gref) as u64,
        ),
        (
            "sizeof(struct ioctl_gntdev_map_grant_ref)",
            size_of::<GntdevMapGrantRef>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_map_grant_ref, count)",
            offset_of!(GntdevMapGrantRef, count) as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_map_grant_ref, index)",
            offset_of!(GntdevMapGrantRef, index) as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_map_grant_ref, refs)",
            GNTDEV_MAP_REFS_OFFSET as u64,
        ),
        (
            "sizeof(struct ioctl_gntdev_unmap_grant_ref)",
            size_of::<GntdevUnmapGrantRef>() as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_unmap_grant_ref, index)",
            offset_of!(GntdevUnmapGrantRef, index) as u64,
        ),
        (
            "offsetof(struct ioctl_gntdev_unmap_grant_ref, count)",
            offset_of!(GntdevUnmapGrantRef, count) as u64,
        ),
        ("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF),
        ("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF),
        (
            "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY",
            IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
        ),
        ("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF),
        ("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF),
        (
            "IOCTL_GNTDEV_SET_UNMAP_NOTIFY",
            IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
        ),
    ]
}

#[test]
fn ioctl_abi_matches_linux_headers() {
    let Some(c) = CheckedHeaders::find("LINUX_INCLUDE_DIR", "xen/gntalloc.h", "linux-libc-dev")
    else {
        return;
    };
    let c = c.prelude(
        "#include <sys/ioctl.h>\n\
         /* gntdev.h's grant-copy struct names these Xen types without defining them. */\n\
         typedef uint32_t grant_ref_t;\ntypedef uint16_t domid_t;\n\
         #include <xen/gntalloc.h>\n#include <xen/gntdev.h>\n",
    );
    let items: Vec<(String, i64)> = items()
        .into_iter()
        .map(|(e, v)| (e.to_owned(), value(v)))
        .collect();
    c.assert_same(&items);
}
