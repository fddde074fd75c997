//! The plain-QEMU main loop: virtio-net and virtio-blk (microvm's virtio-mmio) under the same
//! application as on Xen. Without device interrupts wired up, the loop polls the devices and sleeps
//! in `hlt` until the APIC timer fires, at most [`MAX_SLEEP_NS`] later.

use crate::app::App;
use crate::cmdline::Config;
use crate::disk::Disk;
use alloc::boxed::Box;
use alloc::format;

/// Longest sleep between device polls.
const MAX_SLEEP_NS: u64 = 1_000_000;

/// Runs the key-value server on every virtio-net device (one interface each) with the first
/// virtio-blk device as its disk. Returns if there is no network device.
pub fn run(cfg: &Config) {
    match crate::arch::apic::init() {
        Some(t) => crate::println!("apic: timer {} ticks/ms; PICs masked", t),
        None => crate::println!("apic: none; idling by polling"),
    }
    crate::arch::enable_interrupts();
    let mut found = crate::virtio::probe();
    if found.nets.is_empty() {
        crate::println!("virtio: no network device; nothing to serve");
        return;
    }
    let (disk_name, disk) = if found.blks.is_empty() {
        crate::println!("kv: no disk; using a 4 MiB RAM disk (values will not persist)");
        ("ramdisk", Disk::Mem(kv_app::MemDisk::new(512, 8192)))
    } else {
        ("virtio-blk0", Disk::Virtio(Box::new(found.blks.remove(0))))
    };
    let mut app = match App::new(disk, cfg) {
        Ok(a) => a,
        Err(e) => panic!("kv: cannot start: {e}"),
    };
    // Every virtio-net device serves: interface K is the K-th device found (`ipK=`).
    let mut nets = found.nets;
    for (i, net) in nets.iter_mut().enumerate() {
        let mac = net.mac();
        if let Err(e) = app.add_interface(i as u32, &format!("virtio-net{i}"), net, mac) {
            crate::println!("net: {e}");
        }
    }
    loop {
        let generation = crate::arch::apic::timer_irqs();
        app.stats.nets = nets
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("virtio-net{i}"), n.counters))
            .collect();
        app.stats.blks = alloc::vec![(disk_name.into(), app.store.device().counters)];
        app.stats.events = generation;
        let moved = |nets: &[crate::virtio::VirtioNet]| -> u64 {
            nets.iter()
                .map(|n| n.counters.rx_packets + n.counters.tx_packets)
                .sum()
        };
        let before = moved(&nets);
        let mut delay = MAX_SLEEP_NS;
        for (i, net) in nets.iter_mut().enumerate() {
            if let Some(d) = app.poll_interface(i as u32, net) {
                delay = delay.min(d.total_micros() * 1000);
            }
        }
        // Frames moved: more are likely queued (no device interrupts tell us), so poll again at once.
        if delay == 0 || moved(&nets) != before {
            continue;
        }
        crate::arch::apic::arm(delay);
        crate::arch::disable_interrupts();
        if crate::arch::apic::timer_irqs() == generation {
            crate::arch::enable_interrupts_and_halt();
        } else {
            crate::arch::enable_interrupts();
        }
    }
}
