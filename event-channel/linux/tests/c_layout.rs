//! The evtchn ioctl structs and request numbers against Linux's installed uapi header
//! (`/usr/include/xen/evtchn.h`, Debian package linux-libc-dev), via a C program compiled with
//! `cc`. Without the header the test is skipped with a message unless `CI` is set.

use std::mem::{offset_of, size_of};
use xen_c_check::{value, CheckedHeaders};
use xen_event_channel_linux::sys::*;

fn items() -> Vec<(&'static str, u64)> {
    vec![
        (
            "sizeof(struct ioctl_evtchn_bind_virq)",
            size_of::<BindVirq>() as u64,
        ),
        (
            "sizeof(struct ioctl_evtchn_bind_interdomain)",
            size_of::<BindInterdomain>() as u64,
        ),
        (
            "offsetof(struct ioctl_evtchn_bind_interdomain, remote_domain)",
            offset_of!(BindInterdomain, remote_domain) as u64,
        ),
        (
            "offsetof(struct ioctl_evtchn_bind_interdomain, remote_port)",
            offset_of!(BindInterdomain, remote_port) as u64,
        ),
        (
            "sizeof(struct ioctl_evtchn_bind_unbound_port)",
            size_of::<BindUnboundPort>() as u64,
        ),
        (
            "sizeof(struct ioctl_evtchn_unbind)",
            size_of::<PortArg>() as u64,
        ),
        (
            "sizeof(struct ioctl_evtchn_notify)",
            size_of::<PortArg>() as u64,
        ),
        (
            "offsetof(struct ioctl_evtchn_notify, port)",
            offset_of!(PortArg, port) as u64,
        ),
        ("IOCTL_EVTCHN_BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ),
        (
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
        ),
        (
            "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
        ),
        ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND),
        ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY),
        ("IOCTL_EVTCHN_RESET", IOCTL_EVTCHN_RESET),
        ("sizeof(evtchn_port_t)", 4),
    ]
}

#[test]
fn ioctl_abi_matches_linux_header() {
    let Some(c) = CheckedHeaders::find("LINUX_INCLUDE_DIR", "xen/evtchn.h", "linux-libc-dev")
    else {
        return;
    };
    let c = c.prelude(
        "#include <sys/ioctl.h>\n\
         /* evtchn.h names domid_t without defining it; the read/write unit is a port number. */\n\
         typedef uint16_t domid_t;\ntypedef uint32_t evtchn_port_t;\n\
         #include <xen/evtchn.h>\n",
    );
    let items: Vec<(String, i64)> = items()
        .into_iter()
        .map(|(e, v)| (e.to_owned(), value(v)))
        .collect();
    c.assert_same(&items);
}
