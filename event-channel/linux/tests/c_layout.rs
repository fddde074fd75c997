//! The evtchn ioctl structs and request numbers against Linux's installed uapi header
//! (`/usr/include/xen/evtchn.h`, Debian package linux-libc-dev), via a C program compiled with
//! `cc`. Without the header the test is skipped with a message unless `CI` is set.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;
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
    let inc = std::env::var("LINUX_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&inc).join("xen/evtchn.h").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{inc}/xen/evtchn.h missing (linux-libc-dev)"
        );
        eprintln!("skipped: {inc}/xen/evtchn.h missing (install linux-libc-dev)");
        return;
    }
    let items = items();
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <sys/ioctl.h>\n\
         /* evtchn.h names domid_t without defining it; the read/write unit is a port number. */\n\
         typedef uint16_t domid_t;\ntypedef uint32_t evtchn_port_t;\n\
         #include <xen/evtchn.h>\nint main(void) {\n",
    );
    for (expr, _) in &items {
        c.push_str(&format!(
            "    printf(\"%llu\\n\", (unsigned long long)({expr}));\n"
        ));
    }
    c.push_str("    return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("evtchn-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("l.c"), dir.join("l"));
    std::fs::write(&src, c).unwrap();
    let out = Command::new("cc")
        .args(["-std=gnu11", "-I", &inc, "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the layout program");
    assert!(run.status.success());
    let values: Vec<u64> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(values.len(), items.len());
    let bad: Vec<String> = items
        .iter()
        .zip(&values)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((e, rust), c)| format!("{e}: C {c:#x}, Rust {rust:#x}"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
}
